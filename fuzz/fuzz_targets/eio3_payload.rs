//! Fuzz the Engine.IO v3 polling decoders (Socket.IO v2 clients): the text
//! payload (`<length>:<packet>`), the binary payload (`0x00|0x01`, length
//! digits, `0xFF`, packet) and a binary WebSocket message.
//! Checks: no panic; a decoded payload re-encodes (as the server would send it,
//! in both formats) to packets that decode the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rsio::engine::{
    payload_v3::{
        decode_binary_message_v3, decode_binary_payload_v3, decode_text_payload_v3,
        encode_payload_v3,
    },
    Frame, Packet,
};

/// The packets as the frames a server would queue; `None` for the types a
/// server never sends as such (open).
fn frames(packets: &[Packet]) -> Option<Vec<Frame>> {
    packets
        .iter()
        .map(|p| match p {
            Packet::Binary(b) => Some(Frame::Binary(b.clone())),
            Packet::Open => None,
            other => Some(Frame::text(String::from_utf8(other.encode_text()).ok()?)),
        })
        .collect()
}

fn check_round_trip(packets: &[Packet]) {
    // Only empty packets (`0:0:`): nothing to send back, and an empty body is
    // no payload.
    if packets.is_empty() {
        return;
    }
    let Some(frames) = frames(packets) else {
        return;
    };
    for binary in [false, true] {
        let out = encode_payload_v3(&frames, binary);
        let again = if out.binary {
            decode_binary_payload_v3(out.body)
        } else {
            decode_text_payload_v3(out.body)
        };
        assert_eq!(again.as_deref(), Ok(packets));
    }
}

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok(packets) = decode_text_payload_v3(body.clone()) {
        check_round_trip(&packets);
    }
    if let Ok(packets) = decode_binary_payload_v3(body.clone()) {
        check_round_trip(&packets);
    }
    let _ = decode_binary_message_v3(body);
});
