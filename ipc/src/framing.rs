//! Framing on the stream: a `u32` big-endian length prefix, then the message
//! (tag and body, see the [`crate::codec`] module).
//!
//! The length limit is checked on the prefix alone, before any byte of the body is
//! buffered, so an oversized frame is refused without being allocated.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{self, CodecError, DEFAULT_MAX_FRAME_LENGTH};
use crate::message::Message;

/// Size of the length prefix.
pub const PREFIX_LEN: usize = 4;

/// A complete encoded frame, length prefix included, ready to be written as it is.
///
/// Obtained by encoding a message ([`EncodedFrame::encode`]) or from
/// [`IpcReader::next_frame`](crate::IpcReader::next_frame); the primary relays a received
/// frame to other workers without encoding it again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame(Bytes);

impl EncodedFrame {
    /// Encodes `msg`, refusing it with [`CodecError::TooLarge`] if its frame would exceed `max`.
    pub fn encode(msg: &Message, max: usize) -> Result<Self, CodecError> {
        let mut buf = BytesMut::with_capacity(PREFIX_LEN + codec::size_hint(msg));
        encode_into(msg, &mut buf, max)?;
        Ok(EncodedFrame(buf.freeze()))
    }

    /// The whole frame, length prefix included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// The whole frame, length prefix included.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    /// Length of the whole frame in bytes, length prefix included.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Always false: a frame holds at least its length prefix.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Decodes the message this frame carries (zero-copy for byte chunks).
    pub fn decode(&self) -> Result<Message, CodecError> {
        codec::decode(self.0.slice(PREFIX_LEN..))
    }
}

/// Length-delimited message codec for `tokio_util`'s `Framed`/`FramedRead`/`FramedWrite`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpcCodec {
    max_frame_length: usize,
}

impl Default for IpcCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl IpcCodec {
    /// A codec accepting frames up to [`DEFAULT_MAX_FRAME_LENGTH`].
    pub fn new() -> Self {
        Self::with_max_frame_length(DEFAULT_MAX_FRAME_LENGTH)
    }

    /// A codec accepting frames up to `max` bytes (length prefix excluded; at most `u32::MAX`).
    pub fn with_max_frame_length(max: usize) -> Self {
        IpcCodec {
            max_frame_length: max.min(u32::MAX as usize),
        }
    }

    /// The largest frame accepted, length prefix excluded.
    pub fn max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    /// Splits the next complete frame (length prefix included) off `src`, without decoding it.
    ///
    /// `Ok(None)` when more bytes are needed; [`CodecError::TooLarge`] as soon as the prefix
    /// announces more than the limit (nothing is reserved for it).
    pub fn decode_frame(&mut self, src: &mut BytesMut) -> Result<Option<EncodedFrame>, CodecError> {
        if src.len() < PREFIX_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame_length {
            return Err(CodecError::TooLarge {
                len: len as u64,
                max: self.max_frame_length,
            });
        }
        let total = PREFIX_LEN + len;
        if src.len() < total {
            src.reserve(total - src.len());
            return Ok(None);
        }
        Ok(Some(EncodedFrame(src.split_to(total).freeze())))
    }
}

impl Decoder for IpcCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        match self.decode_frame(src)? {
            Some(frame) => frame.decode().map(Some),
            None => Ok(None),
        }
    }
}

impl Encoder<&Message> for IpcCodec {
    type Error = CodecError;

    fn encode(&mut self, msg: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_into(msg, dst, self.max_frame_length)
    }
}

impl Encoder<Message> for IpcCodec {
    type Error = CodecError;

    fn encode(&mut self, msg: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        encode_into(&msg, dst, self.max_frame_length)
    }
}

impl Encoder<EncodedFrame> for IpcCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: EncodedFrame, dst: &mut BytesMut) -> Result<(), CodecError> {
        dst.extend_from_slice(&frame.0);
        Ok(())
    }
}

/// Appends the frame of `msg` to `dst`; on [`CodecError::TooLarge`], `dst` is left as it was.
fn encode_into(msg: &Message, dst: &mut BytesMut, max: usize) -> Result<(), CodecError> {
    let start = dst.len();
    dst.put_u32(0);
    codec::encode(msg, dst);
    let len = dst.len() - start - PREFIX_LEN;
    let max = max.min(u32::MAX as usize);
    if len > max {
        dst.truncate(start);
        return Err(CodecError::TooLarge {
            len: len as u64,
            max,
        });
    }
    (&mut dst[start..start + PREFIX_LEN]).put_u32(len as u32);
    Ok(())
}
