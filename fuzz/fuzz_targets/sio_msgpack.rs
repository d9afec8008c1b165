//! Fuzz the msgpack packet decoder (socket.io-msgpack-parser's format).
//!
//! Input: one Engine.IO binary message (a msgpack map `{type, data, nsp, id?}`).
//!
//! Checks: no panic; an accepted packet encodes to msgpack that decodes, and
//! encoding that again gives the same bytes (the first pass may normalise,
//! e.g. an integral float becomes an integer, as in JavaScript); a recovery
//! offset can be appended to an encoded EVENT, and the result still decodes
//! with the offset as its last argument.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use rsio::parser::msgpack::{append_string_arg, decode_packet, encode_packet};
use rsio::parser::{Decoder, Parser, PacketData};
use serde_json::value::RawValue;

fuzz_target!(|data: &[u8]| {
    let mut decoder = Decoder::with_parser(Parser::Msgpack, 10);
    let Ok(Some(p)) = decoder.decode_binary(Bytes::copy_from_slice(data)) else {
        return;
    };
    let first = Bytes::from(encode_packet(&p).expect("an accepted packet encodes"));
    let q = decode_packet(&first).expect("a re-encoded packet decodes");
    let second = Bytes::from(encode_packet(&q).expect("encodes again"));
    assert_eq!(first, second, "encoding is not stable for {p:?}");
    if let Some(args) = q.args() {
        let raws = args.decode::<Vec<Box<RawValue>>>();
        assert_eq!(raws.map(|r| r.len()).ok(), Some(args.len()));
    }
    if let PacketData::Event { .. } = q.data {
        let with = append_string_arg(&first, "12345").expect("an event has a data array");
        let r = decode_packet(&with).expect("the offset keeps it decodable");
        let args = r.args().expect("still an event");
        assert_eq!(args.len(), q.args().map_or(0, |a| a.len()) + 1);
        assert_eq!(args.get::<String>(args.len() - 1).ok().as_deref(), Some("12345"));
    }
});
