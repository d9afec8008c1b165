//! Fuzz the Engine.IO decoders: a polling POST body and a WebSocket text frame.
//! Checks: no panic; a decoded payload re-encodes (as the client would send it)
//! to packets that decode the same.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rsio::engine::{payload::decode_payload, Packet};

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    if let Ok(packets) = decode_payload(body.clone()) {
        let mut again = Vec::new();
        for (i, p) in packets.iter().enumerate() {
            if i > 0 {
                again.push(0x1e);
            }
            again.extend_from_slice(&p.encode_text());
        }
        assert_eq!(decode_payload(Bytes::from(again)).as_ref(), Ok(&packets));
    }
    if std::str::from_utf8(data).is_ok() {
        let _ = Packet::decode_text(body);
    }
});
