//! Compressing what the server sends.
//!
//! No context is kept between messages (`server_no_context_takeover` is always
//! answered), so a message compresses the same for every recipient: a broadcast
//! frame carries a [`SharedDeflate`] that the first recipient with deflate fills
//! and every other one reuses.

use std::{
    cell::RefCell,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        OnceLock,
    },
};

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

thread_local! {
    /// One compressor per thread, reset for each message (creating one
    /// allocates a few hundred KiB).
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
}

/// Messages compressed since the process started.
static COMPRESSIONS: AtomicU64 = AtomicU64::new(0);

/// The smallest threshold of any engine with deflate on in this process
/// (`usize::MAX` when none): frames below it need no [`SharedDeflate`].
static SMALLEST_THRESHOLD: AtomicUsize = AtomicUsize::new(usize::MAX);

/// How many messages permessage-deflate compressed in this process: once per
/// broadcast frame however many clients get it, once per direct message.
/// Cheap to read; for monitoring and tests.
pub fn compressions() -> u64 {
    COMPRESSIONS.load(Ordering::Relaxed)
}

/// Records that an engine compresses messages of at least `threshold` bytes.
pub(crate) fn enable(threshold: usize) {
    SMALLEST_THRESHOLD.fetch_min(threshold, Ordering::Relaxed);
}

/// Whether a frame of `len` bytes may be compressed by some engine here, so a
/// broadcast should give its recipients a [`SharedDeflate`] for it.
pub(crate) fn may_compress(len: usize) -> bool {
    len >= SMALLEST_THRESHOLD.load(Ordering::Relaxed)
}

/// A broadcast frame's compressed payload (RSV1 set), made once by the first
/// recipient that negotiated deflate and reused by the others. `None` inside:
/// compression failed, send it plain.
#[derive(Debug, Default)]
pub struct SharedDeflate(OnceLock<(u32, Option<Bytes>)>);

/// `msg` as a compressed frame (RSV1 set) when it is a data message of at least
/// `threshold` bytes; otherwise unchanged.
pub(crate) fn compress(msg: Message, cfg: &DeflateConfig) -> Message {
    compress_with(msg, cfg, None)
}

/// As [`compress`], reusing (or filling) `shared`: the payload of `msg` must be
/// the same for every recipient that shares it.
pub(crate) fn compress_shared(
    msg: Message,
    cfg: &DeflateConfig,
    shared: &SharedDeflate,
) -> Message {
    compress_with(msg, cfg, Some(shared))
}

fn compress_with(msg: Message, cfg: &DeflateConfig, shared: Option<&SharedDeflate>) -> Message {
    let (data, opcode) = match &msg {
        Message::Text(t) if t.len() >= cfg.threshold => (AsRef::<[u8]>::as_ref(t), Data::Text),
        Message::Binary(b) if b.len() >= cfg.threshold => (&b[..], Data::Binary),
        _ => return msg,
    };
    let compressed = match shared {
        Some(shared) => {
            let (level, compressed) = shared
                .0
                .get_or_init(|| (cfg.level, deflate(data, cfg.level).map(Bytes::from)));
            if *level == cfg.level {
                compressed.clone()
            } else {
                // Another engine of this process, another level: not shareable.
                deflate(data, cfg.level).map(Bytes::from)
            }
        }
        None => deflate(data, cfg.level).map(Bytes::from),
    };
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
    COMPRESSIONS.fetch_add(1, Ordering::Relaxed);
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
    fn large_messages_are_compressed_small_ones_left() {
        let cfg = DeflateConfig::default();
        let big = Bytes::from(format!("4{}", "fragmented ".repeat(3000)));
        let Message::Frame(f1) = compress(Message::Binary(big.clone()), &cfg) else {
            panic!("not compressed");
        };
        assert!(f1.header().rsv1);
        assert!(inflate(f1.payload()) == big);
        let small = Message::Text("4hi".into());
        assert_eq!(compress(small.clone(), &cfg), small);
    }

    #[test]
    fn a_shared_frame_is_compressed_once() {
        let cfg = DeflateConfig::default();
        let big = Bytes::from(format!("4{}", "shared ".repeat(3000)));
        let shared = SharedDeflate::default();
        let Message::Frame(f1) = compress_shared(Message::Binary(big.clone()), &cfg, &shared)
        else {
            panic!("not compressed");
        };
        let Message::Frame(f2) = compress_shared(Message::Binary(big.clone()), &cfg, &shared)
        else {
            panic!("not compressed");
        };
        // The same bytes, not compressed again.
        assert_eq!(f1.payload().as_ptr(), f2.payload().as_ptr());
        assert!(inflate(f2.payload()) == big);
        // Another level is not served the first one's result.
        let other = DeflateConfig { level: 1, ..cfg };
        let Message::Frame(f3) = compress_shared(Message::Binary(big.clone()), &other, &shared)
        else {
            panic!("not compressed");
        };
        assert_ne!(f1.payload().as_ptr(), f3.payload().as_ptr());
        assert!(inflate(f3.payload()) == big);
    }
}
