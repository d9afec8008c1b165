//! Compressing what the server sends.
//!
//! No context is kept between messages (`server_no_context_takeover` is always
//! answered), so a message compresses the same for every recipient. A broadcast
//! queues the same `Bytes` for each of them: each thread remembers the last
//! message it compressed, and the recipients it serves get that result without
//! compressing again.

use std::cell::RefCell;

use bytes::Bytes;
use flate2::{Compress, Compression, FlushCompress};
use tokio_tungstenite::tungstenite::{
    protocol::frame::{
        coding::{Data, OpCode},
        Frame,
    },
    Message,
};

use crate::engine::config::DeflateConfig;

/// The last message compressed on this thread. Holding `source` keeps its
/// memory alive, so a message at the same address and length is the same one.
struct Last {
    source: Bytes,
    level: u32,
    compressed: Bytes,
}

thread_local! {
    static LAST: RefCell<Option<Last>> = const { RefCell::new(None) };
    /// One compressor per thread, reset for each message (creating one
    /// allocates a few hundred KiB).
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// `msg` as a compressed frame (RSV1 set) when it is a data message of at least
/// `threshold` bytes; otherwise unchanged.
pub(crate) fn compress(msg: Message, cfg: &DeflateConfig) -> Message {
    let (data, opcode) = match &msg {
        Message::Text(t) if t.len() >= cfg.threshold => {
            (AsRef::<Bytes>::as_ref(t).clone(), Data::Text)
        }
        Message::Binary(b) if b.len() >= cfg.threshold => (b.clone(), Data::Binary),
        _ => return msg,
    };
    let compressed = LAST.with(|last| {
        let mut last = last.try_borrow_mut().ok()?;
        if let Some(l) = last.as_ref() {
            if l.level == cfg.level
                && l.source.as_ptr() == data.as_ptr()
                && l.source.len() == data.len()
            {
                return Some(l.compressed.clone());
            }
        }
        let compressed = Bytes::from(deflate(&data, cfg.level)?);
        *last = Some(Last {
            source: data,
            level: cfg.level,
            compressed: compressed.clone(),
        });
        Some(compressed)
    });
    let Some(compressed) = compressed else {
        return msg;
    };
    let mut frame = Frame::message(compressed, OpCode::Data(opcode), true);
    frame.header_mut().rsv1 = true;
    Message::Frame(frame)
}

/// Raw deflate of `data` ended by a sync flush, without the flush's trailing
/// `00 00 ff ff` (RFC 7692 7.2.1).
fn deflate(data: &[u8], level: u32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.try_borrow_mut().ok()?;
        let compressor = match c.as_mut() {
            Some((l, compressor)) if *l == level => {
                compressor.reset();
                compressor
            }
            _ => {
                let fresh = Compress::new(Compression::new(level.min(9)), false);
                &mut c.insert((level, fresh)).1
            }
        };
        let mut out = Vec::with_capacity(data.len() / 2 + 64);
        let mut input = data;
        loop {
            let before = compressor.total_in();
            compressor
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .ok()?;
            input = &input[(compressor.total_in() - before) as usize..];
            // Done once all input is taken and the flush fit in the space left.
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        if !out.ends_with(&[0, 0, 0xff, 0xff]) {
            return None;
        }
        out.truncate(out.len() - 4);
        Some(out)
    })
}

#[cfg(test)]
mod tests {
    use flate2::{Decompress, FlushDecompress};

    use super::*;

    fn inflate(z: &[u8]) -> Vec<u8> {
        let mut d = Decompress::new(false);
        let mut input = z.to_vec();
        input.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut out = Vec::with_capacity(1 << 20);
        d.decompress_vec(&input, &mut out, FlushDecompress::Sync)
            .unwrap();
        out
    }

    #[test]
    fn large_messages_are_compressed_once_and_small_ones_left() {
        let cfg = DeflateConfig::default();
        let big = Bytes::from(format!("4{}", "fragmented ".repeat(3000)));
        let Message::Frame(f1) = compress(Message::Binary(big.clone()), &cfg) else {
            panic!("not compressed");
        };
        assert!(f1.header().rsv1);
        assert!(
            inflate(f1.payload()) == big,
            "{}",
            inflate(f1.payload()).len()
        );
        let Message::Frame(f2) = compress(Message::Binary(big.clone()), &cfg) else {
            panic!("not compressed");
        };
        // The same bytes, not compressed again.
        assert_eq!(f1.payload().as_ptr(), f2.payload().as_ptr());
        let small = Message::Text("4hi".into());
        assert_eq!(compress(small.clone(), &cfg), small);
    }
}
