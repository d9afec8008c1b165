//! `--deflate`: permessage-deflate as socket.io-client in Node does it (the
//! `ws` package's default offer `permessage-deflate; client_max_window_bits`,
//! its own sends of 1024 bytes and more compressed).
//!
//! tungstenite refuses frames with RSV1 set, so [`Conn`] sits under it: it
//! passes the HTTP handshake response through, and from then on replaces every
//! compressed server message by one plain frame holding the inflated data. The
//! inflater is kept for the whole connection, as a server may keep its context
//! (Node does unless asked not to; rsio never does). Sends are compressed with
//! a compressor reset for every message, which is valid whatever the server
//! answered about the client's context.

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    task::{ready, Context, Poll},
};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::{
    protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    },
    Message,
};

static ON: AtomicBool = AtomicBool::new(false);
/// Compressed messages received (the proof that deflate was negotiated).
static INFLATED: AtomicU64 = AtomicU64::new(0);

/// Messages this size and larger are sent compressed (socket.io-client's threshold).
const THRESHOLD: usize = 1024;

/// Offer deflate from now on.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Compressed messages received so far.
pub fn inflated() -> u64 {
    INFLATED.load(Ordering::Relaxed)
}

pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// The `Sec-WebSocket-Extensions` offer.
pub const OFFER: &str = "permessage-deflate; client_max_window_bits";

thread_local! {
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
}

/// `msg` compressed (RSV1 set) when deflate is on and it is large enough.
pub fn outgoing(msg: Message) -> Message {
    if !enabled() {
        return msg;
    }
    let (data, opcode) = match &msg {
        Message::Text(t) if t.len() >= THRESHOLD => (t.as_bytes(), Data::Text),
        Message::Binary(b) if b.len() >= THRESHOLD => (&b[..], Data::Binary),
        _ => return msg,
    };
    let compressed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        c.reset();
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = data;
        loop {
            let before = c.total_in();
            c.compress_vec(input, &mut out, FlushCompress::Sync).ok()?;
            input = &input[(c.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        out.truncate(out.len().checked_sub(4)?);
        Some(out)
    });
    let Some(compressed) = compressed else {
        return msg;
    };
    let mut frame = Frame::message(compressed, OpCode::Data(opcode), true);
    frame.header_mut().rsv1 = true;
    Message::Frame(frame)
}

/// The TCP connection under tungstenite; with deflate, server messages are
/// inflated on the way in.
pub struct Conn {
    tcp: TcpStream,
    inbound: Option<Box<Inbound>>,
}

impl Conn {
    pub fn new(tcp: TcpStream) -> Conn {
        let inbound = enabled().then(|| {
            Box::new(Inbound {
                headers_done: false,
                negotiated: false,
                raw: Vec::new(),
                out: Vec::new(),
                out_pos: 0,
                inflater: Decompress::new(false),
                message: None,
            })
        });
        Conn { tcp, inbound }
    }
}

struct Inbound {
    /// The HTTP response has been passed on.
    headers_done: bool,
    /// The server answered permessage-deflate.
    negotiated: bool,
    /// Read, not yet handled.
    raw: Vec<u8>,
    /// Ready for tungstenite, from `out_pos` on.
    out: Vec<u8>,
    out_pos: usize,
    inflater: Decompress,
    /// The compressed message being received: its opcode and inflated data.
    message: Option<(u8, Vec<u8>)>,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

impl Inbound {
    /// Moves what `raw` holds to `out` as far as it can.
    fn process(&mut self) -> io::Result<()> {
        if !self.headers_done {
            // Held until the whole response is here, so the answer is seen whole.
            let Some(end) = self.raw.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            let head = String::from_utf8_lossy(&self.raw[..end + 4]).to_ascii_lowercase();
            self.negotiated = head.lines().any(|l| {
                l.starts_with("sec-websocket-extensions:") && l.contains("permessage-deflate")
            });
            self.out.extend(self.raw.drain(..end + 4));
            self.headers_done = true;
        }
        if !self.negotiated {
            self.out.append(&mut self.raw);
            return Ok(());
        }
        while let Some((b0, len, size)) = header(&self.raw) {
            let end = size + len;
            if self.raw.len() < end {
                break;
            }
            let (fin, rsv1, opcode) = (b0 & 0x80 != 0, b0 & 0x40 != 0, b0 & 0x0f);
            if rsv1 || (opcode == 0 && self.message.is_some()) {
                let (_, data) = self.message.get_or_insert_with(|| (opcode, Vec::new()));
                inflate(&mut self.inflater, &self.raw[size..end], data)?;
                if fin {
                    inflate(&mut self.inflater, &[0, 0, 0xff, 0xff], data)?;
                    let (op, data) = self.message.take().unwrap_or_default();
                    INFLATED.fetch_add(1, Ordering::Relaxed);
                    put_frame(&mut self.out, 0x80 | op, &data);
                }
            } else {
                self.out.extend_from_slice(&self.raw[..end]);
            }
            self.raw.drain(..end);
        }
        Ok(())
    }
}

/// The first header byte, payload length and header size of the frame at the
/// start of `b` (server frames are not masked), if the header is all there.
fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
    let (b0, b1) = (*b.first()?, *b.get(1)?);
    Some(match b1 & 0x7f {
        126 => (
            b0,
            u16::from_be_bytes(b.get(2..4)?.try_into().ok()?) as usize,
            4,
        ),
        127 => (
            b0,
            u64::from_be_bytes(b.get(2..10)?.try_into().ok()?) as usize,
            10,
        ),
        n => (b0, n as usize, 2),
    })
}

fn put_frame(out: &mut Vec<u8>, b0: u8, data: &[u8]) {
    out.push(b0);
    match data.len() {
        n if n < 126 => out.push(n as u8),
        n if n < 0x1_0000 => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(data);
}

fn inflate(d: &mut Decompress, mut input: &[u8], out: &mut Vec<u8>) -> io::Result<()> {
    loop {
        if out.capacity() - out.len() < 1024 {
            out.reserve(out.capacity().max(4096));
        }
        let (before_in, before_out) = (d.total_in(), d.total_out());
        d.decompress_vec(input, out, FlushDecompress::Sync)
            .map_err(|_| invalid("invalid compressed data"))?;
        let used = (d.total_in() - before_in) as usize;
        input = &input[used..];
        // Done once the input is taken and the output did not fill the space.
        if input.is_empty() && out.len() < out.capacity() {
            return Ok(());
        }
        if used == 0 && d.total_out() == before_out {
            return Err(invalid("inflater stuck"));
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(st) = this.inbound.as_mut() else {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        };
        loop {
            if st.out_pos < st.out.len() {
                let n = buf.remaining().min(st.out.len() - st.out_pos);
                buf.put_slice(&st.out[st.out_pos..st.out_pos + n]);
                st.out_pos += n;
                if st.out_pos == st.out.len() {
                    st.out.clear();
                    st.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                return Poll::Ready(Ok(()));
            }
            st.raw.extend_from_slice(read.filled());
            st.process()?;
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compressed_message_is_inflated_into_a_plain_frame() {
        let text = format!("42[\"bcast\",\"{}\"]", "x".repeat(4000));
        let mut c = Compress::new(Compression::default(), false);
        let mut z = Vec::with_capacity(8192);
        c.compress_vec(text.as_bytes(), &mut z, FlushCompress::Sync)
            .unwrap();
        z.truncate(z.len() - 4);
        let mut st = Inbound {
            headers_done: false,
            negotiated: false,
            raw: b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n".to_vec(),
            out: Vec::new(),
            out_pos: 0,
            inflater: Decompress::new(false),
            message: None,
        };
        put_frame(&mut st.raw, 0x81, b"2");
        put_frame(&mut st.raw, 0xc1, &z);
        st.process().unwrap();
        assert!(st.negotiated);
        let head_end = st.out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let mut want = Vec::new();
        put_frame(&mut want, 0x81, b"2");
        put_frame(&mut want, 0x81, text.as_bytes());
        assert!(st.out[head_end..] == want[..]);
    }
}
