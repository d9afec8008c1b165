//! The read side of a connection that negotiated permessage-deflate.
//!
//! tungstenite refuses frames with RSV1 set, so this layer sits between the
//! socket and tungstenite: it passes uncompressed frames through as they are,
//! and replaces each compressed message by one plain frame holding its inflated
//! data (masked with a zero key, so the payload is written as is).

use std::{
    io,
    pin::Pin,
    task::{ready, Context, Poll},
};

use flate2::{Decompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a compressed message was refused (the close code is in brackets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DeflateError {
    /// Inflated past `maxHttpBufferSize` (1009).
    #[error("inflated message over the size limit")]
    TooLarge,
    /// Not valid deflate data (1007).
    #[error("invalid compressed data")]
    Invalid,
    /// RSV1 on a control or continuation frame, or an unmasked compressed frame (1002).
    #[error("invalid use of RSV1")]
    Protocol,
}

/// Read buffers kept between reads are freed when drained if they grew past this.
const KEEP: usize = 4096;
/// Inflated bytes produced per step (the size bound is checked between steps).
const STEP: usize = 8 * 1024;

/// A connection's I/O with compressed messages inflated on the way in; writes
/// pass straight through.
pub(crate) struct DeflateIo<T> {
    inner: T,
    st: Box<Inbound>,
}

struct Inbound {
    /// Largest message, inflated.
    max: usize,
    /// Read from the socket, not yet parsed.
    raw: Vec<u8>,
    /// Frames ready for tungstenite, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    /// The compressed message being received, if any.
    message: Option<Inflating>,
    failed: Option<DeflateError>,
    eof: bool,
}

/// A compressed message: its opcode and what was inflated so far. The inflater
/// lives for one message (the client was told not to keep its context), so an
/// idle connection holds none.
struct Inflating {
    opcode: u8,
    inflater: Decompress,
    data: Vec<u8>,
}

impl<T> DeflateIo<T> {
    /// `max`: the largest message accepted once inflated.
    pub(crate) fn new(inner: T, max: usize) -> Self {
        DeflateIo {
            inner,
            st: Box::new(Inbound {
                max,
                raw: Vec::new(),
                out: Vec::new(),
                out_pos: 0,
                message: None,
                failed: None,
                eof: false,
            }),
        }
    }
}

/// A frame header: FIN, RSV1, opcode, masking key, payload length; and its size.
struct Header {
    fin: bool,
    rsv1: bool,
    opcode: u8,
    mask: Option<[u8; 4]>,
    len: u64,
    size: usize,
}

/// The header at the start of `b`, or `None` if it is not all there yet.
fn parse_header(b: &[u8]) -> Option<Header> {
    let (&b0, &b1) = (b.first()?, b.get(1)?);
    let (len, mut size) = match b1 & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(b.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(b.get(2..10)?.try_into().ok()?), 10),
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 {
        let key: [u8; 4] = b.get(size..size + 4)?.try_into().ok()?;
        size += 4;
        Some(key)
    } else {
        None
    };
    Some(Header {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        opcode: b0 & 0x0f,
        mask,
        len,
        size,
    })
}

/// Whether a step of parsing made progress or needs more bytes.
enum Step {
    Progress,
    NeedMore,
}

impl Inbound {
    /// Handles the frame at the front of `raw`, if it is all there.
    fn step(&mut self) -> Result<Step, DeflateError> {
        let Some(h) = parse_header(&self.raw) else {
            return Ok(Step::NeedMore);
        };
        if h.len > self.max as u64 {
            return Err(DeflateError::TooLarge);
        }
        let end = h.size + h.len as usize;
        if self.raw.len() < end {
            self.raw.reserve(end - self.raw.len());
            return Ok(Step::NeedMore);
        }
        let compressed = match h.opcode {
            1 | 2 if h.rsv1 => {
                if self.message.is_some() {
                    return Err(DeflateError::Protocol);
                }
                self.message = Some(Inflating {
                    opcode: h.opcode,
                    inflater: Decompress::new(false),
                    data: Vec::new(),
                });
                true
            }
            0 if h.rsv1 => return Err(DeflateError::Protocol),
            0 => self.message.is_some(),
            1 | 2 if self.message.is_some() => return Err(DeflateError::Protocol),
            op if op >= 8 && h.rsv1 => return Err(DeflateError::Protocol),
            _ => false,
        };
        if !compressed {
            // tungstenite checks everything else about it.
            self.out.extend_from_slice(&self.raw[..end]);
        } else {
            let key = h.mask.ok_or(DeflateError::Protocol)?;
            let payload = &mut self.raw[h.size..end];
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i & 3];
            }
            let max = self.max;
            let Some(msg) = self.message.as_mut() else {
                return Err(DeflateError::Protocol);
            };
            inflate(&mut msg.inflater, payload, &mut msg.data, max)?;
            if h.fin {
                inflate(&mut msg.inflater, &[0, 0, 0xff, 0xff], &mut msg.data, max)?;
                if let Some(msg) = self.message.take() {
                    push_frame(&mut self.out, msg.opcode, &msg.data);
                }
            }
        }
        self.raw.drain(..end);
        if self.raw.is_empty() && self.raw.capacity() > KEEP {
            self.raw = Vec::new();
        }
        Ok(Step::Progress)
    }
}

/// Inflates `input` onto `data`, refusing to produce more than `max` bytes in all.
///
fn inflate(
    d: &mut Decompress,
    mut input: &[u8],
    data: &mut Vec<u8>,
    max: usize,
) -> Result<(), DeflateError> {
    let mut buf = [0u8; STEP];
    loop {
        let (in0, out0) = (d.total_in(), d.total_out());
        let status = d
            .decompress(input, &mut buf, FlushDecompress::None)
            .map_err(|_| DeflateError::Invalid)?;
        let used = (d.total_in() - in0) as usize;
        let produced = (d.total_out() - out0) as usize;
        if data.len() + produced > max {
            return Err(DeflateError::TooLarge);
        }
        data.extend_from_slice(&buf[..produced]);
        input = &input[used..];
        match status {
            Status::StreamEnd => return Ok(()),
            // zlib-rs may stop short of a full buffer with more to give:
            // done only once a call makes no output.
            _ if produced == 0 && (input.is_empty() || used == 0) => return Ok(()),
            _ => {}
        }
    }
}

/// Appends a final frame of `opcode` carrying `data`, masked with a zero key
/// (tungstenite expects client frames masked; XOR with zero leaves the data).
fn push_frame(out: &mut Vec<u8>, opcode: u8, data: &[u8]) {
    out.reserve(14 + data.len());
    out.push(0x80 | opcode);
    match data.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(data);
}

fn io_error(err: DeflateError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, err)
}

impl<T: AsyncRead + Unpin> AsyncRead for DeflateIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let st = &mut *this.st;
        loop {
            if st.out_pos < st.out.len() {
                let n = (st.out.len() - st.out_pos).min(buf.remaining());
                buf.put_slice(&st.out[st.out_pos..st.out_pos + n]);
                st.out_pos += n;
                if st.out_pos == st.out.len() {
                    st.out_pos = 0;
                    if st.out.capacity() > KEEP {
                        st.out = Vec::new();
                    } else {
                        st.out.clear();
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(err) = st.failed {
                return Poll::Ready(Err(io_error(err)));
            }
            if st.eof {
                return Poll::Ready(Ok(()));
            }
            match st.step() {
                Ok(Step::Progress) => continue,
                Ok(Step::NeedMore) => {}
                Err(err) => {
                    st.failed = Some(err);
                    continue;
                }
            }
            if st.raw.capacity() - st.raw.len() < 512 {
                st.raw.reserve(KEEP);
            }
            let len = st.raw.len();
            let spare = st.raw.capacity() - len;
            st.raw.resize(len + spare, 0);
            let mut read = ReadBuf::new(&mut st.raw[len..]);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut read);
            let got = read.filled().len();
            st.raw.truncate(len + got);
            ready!(polled)?;
            if got == 0 {
                st.eof = true;
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for DeflateIo<T> {
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
    use flate2::{Compress, Compression, FlushCompress};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn deflate(data: &[u8]) -> Vec<u8> {
        let mut c = Compress::new(Compression::default(), false);
        let mut out = Vec::with_capacity(data.len() + 64);
        c.compress_vec(data, &mut out, FlushCompress::Sync).unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    /// A masked client frame with the given first byte.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let key = [1, 2, 3, 4];
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i & 3]));
        f
    }

    async fn read_through(input: Vec<u8>, max: usize) -> io::Result<Vec<u8>> {
        let (mut peer, inner) = tokio::io::duplex(1 << 20);
        peer.write_all(&input).await.unwrap();
        drop(peer);
        let mut io = DeflateIo::new(inner, max);
        let mut out = Vec::new();
        io.read_to_end(&mut out).await.map(|_| out)
    }

    #[tokio::test]
    async fn compressed_fragments_become_one_plain_frame_and_others_pass() {
        let text = format!("4{}", "fragmented ".repeat(3000));
        let z = deflate(text.as_bytes());
        let (a, b) = z.split_at(z.len() / 2);
        let ping = frame(0x89, b"p");
        let plain = frame(0x82, b"raw");
        let mut input = frame(0x41, a);
        input.extend(&ping);
        input.extend(frame(0x80, b));
        input.extend(&plain);
        let out = read_through(input, 1 << 20).await.unwrap();
        let mut want = ping.clone();
        push_frame(&mut want, 1, text.as_bytes());
        want.extend(&plain);
        assert!(out == want, "{} bytes, want {}", out.len(), want.len());
    }

    #[tokio::test]
    async fn a_zip_bomb_stops_at_the_limit() {
        let z = deflate(&vec![0u8; 10 << 20]);
        let err = read_through(frame(0xc2, &z[..z.len().min(60_000)]), 100_000)
            .await
            .unwrap_err();
        let inner = err.get_ref().and_then(|e| e.downcast_ref::<DeflateError>());
        assert_eq!(inner, Some(&DeflateError::TooLarge));
        // Exactly at the limit is fine.
        let z = deflate(&[7u8; 1000]);
        assert!(read_through(frame(0xc2, &z), 1000).await.is_ok());
    }

    #[tokio::test]
    async fn rsv1_on_control_or_continuation_and_bad_data_are_refused() {
        for (input, want) in [
            (frame(0xc9, b""), DeflateError::Protocol),
            (frame(0xc0, b"x"), DeflateError::Protocol),
            (frame(0xc1, &[0xff, 0xff, 0xff]), DeflateError::Invalid),
        ] {
            let err = read_through(input, 1000).await.unwrap_err();
            let inner = err.get_ref().and_then(|e| e.downcast_ref::<DeflateError>());
            assert_eq!(inner, Some(&want));
        }
    }

    #[test]
    fn input_split_anywhere_inflates_to_the_whole_message() {
        let text = format!("4{}", "fragmented ".repeat(3000));
        let z = deflate(text.as_bytes());
        for at in [0, 1, z.len() / 3, z.len() / 2, z.len()] {
            let mut d = Decompress::new(false);
            let mut out = Vec::new();
            inflate(&mut d, &z[..at], &mut out, 1 << 20).unwrap();
            inflate(&mut d, &z[at..], &mut out, 1 << 20).unwrap();
            inflate(&mut d, &[0, 0, 0xff, 0xff], &mut out, 1 << 20).unwrap();
            assert!(out == text.as_bytes(), "split at {at}: {} bytes", out.len());
        }
    }
}
