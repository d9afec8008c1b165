//! permessage-deflate (RFC 7692) on the WebSocket transport: negotiation,
//! inflating what clients send, compressing what the server sends.
//!
//! Only connections that negotiated it go through this module; the others keep
//! tungstenite's own reader and pay nothing for it.

mod inbound;
mod negotiate;
mod outbound;

pub(crate) use inbound::{DeflateError, DeflateIo};
pub(crate) use negotiate::negotiate;
pub(crate) use outbound::{compress, compress_shared, enable, may_compress};
pub use outbound::{compressions, SharedDeflate};

/// Runs `input` (client frames, as read from the socket) through the inflating
/// reader with messages capped at `max` bytes: the frames it hands on, or why
/// it stopped. For the fuzz target; not part of the API.
#[doc(hidden)]
pub fn fuzz_read(input: &[u8], max: usize) -> Result<Vec<u8>, String> {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };
    use tokio::io::{AsyncRead, ReadBuf};

    let mut io = DeflateIo::new(input, max);
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let mut read = ReadBuf::new(&mut buf);
        match Pin::new(&mut io).poll_read(&mut cx, &mut read) {
            Poll::Ready(Ok(())) if read.filled().is_empty() => return Ok(out),
            Poll::Ready(Ok(())) => out.extend_from_slice(read.filled()),
            Poll::Ready(Err(err)) => return Err(err.to_string()),
            // A slice never waits.
            Poll::Pending => return Err("pending".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuzz_seeds_run_and_the_bomb_is_refused() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/ws_deflate");
        for name in ["text", "fragments", "plain"] {
            let input = std::fs::read(format!("{dir}/{name}")).unwrap();
            let out = fuzz_read(&input, 64 * 1024).unwrap();
            assert!(out.len() > input.len() / 2, "{name}");
        }
        let bomb = std::fs::read(format!("{dir}/bomb")).unwrap();
        assert!(fuzz_read(&bomb, 64 * 1024).is_err());
    }
}
