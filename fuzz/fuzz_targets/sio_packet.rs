//! Fuzz the Socket.IO packet decoder.
//!
//! Input layout: parts separated by the byte 0xFF (never present in UTF-8
//! text). The first part is an Engine.IO text message (without the `4`);
//! each following part is a binary attachment, except that a part starting
//! with `T` is another text message (its remaining bytes).
//!
//! Checks: no panic; every accepted packet re-encodes to text (plus its
//! attachments) that decodes to an equal packet, and its arguments can be
//! split into raw JSON values.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rsio::parser::{Decoder, Packet};
use serde_json::value::RawValue;

const SEP: u8 = 0xFF;

fn check_round_trip(p: &Packet) {
    let text = p.encode();
    let mut d = Decoder::new(usize::MAX);
    let mut q = d.decode_text(Bytes::from(text.clone()));
    for att in p.attachments() {
        q = d.decode_binary(att.clone());
    }
    match q {
        Ok(Some(q)) => assert_eq!(&q, p, "re-encoded as {text:?}"),
        other => panic!("re-encoded {text:?} did not decode: {other:?}"),
    }
    if let Some(args) = p.args() {
        let raws = args.decode::<Vec<Box<RawValue>>>();
        assert_eq!(raws.map(|r| r.len()).ok(), Some(args.len()));
    }
}

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::new(10);
    for (i, part) in data.split(|&b| b == SEP).enumerate() {
        let result = if i == 0 {
            decoder.decode_text(Bytes::copy_from_slice(part))
        } else if let Some(text) = part.strip_prefix(b"T") {
            decoder.decode_text(Bytes::copy_from_slice(text))
        } else {
            decoder.decode_binary(Bytes::copy_from_slice(part))
        };
        if let Ok(Some(packet)) = result {
            check_round_trip(&packet);
        }
    }
});
