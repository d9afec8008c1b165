use bytes::Bytes;
use serde_json::{json, value::RawValue, Value};

use super::*;
use crate::parser::{Binary, Decoder, Parser, MAX_DEPTH};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// Expected bytes obtained once with notepack.io 2.2.0 (what
// socket.io-msgpack-parser 3.0.2 uses), e.g.:
// node -e 'console.log(require("notepack.io").encode({type:2,data:["chat",
//   "héllo",1,-5,300,1.5,true,null,{a:[1,2]},Buffer.from([1,2,3])],
//   nsp:"/room",id:7}).toString("hex"))'
const EVENT: &str = "84a47479706502a4646174619aa463686174a668c3a96c6c6f01fbcd012ccb3ff8000000000000c3c081a161920102c403010203a36e7370a52f726f6f6da2696407";
const CONNECT: &str = "83a47479706500a46461746181a3736964a3616263a36e7370a12f"; // {type:0,data:{sid:"abc"},nsp:"/"}
const DISCONNECT: &str = "82a47479706501a36e7370a12f"; // {type:1,nsp:"/"}
const ACK: &str = "84a47479706503a46461746192c4027879a26f6ba36e7370a12fa26964cd012c"; // {type:3,data:[Buffer.from("xy"),"ok"],nsp:"/",id:300}

fn event_packet() -> Packet {
    let args = Args::new(&(
        "héllo",
        1,
        -5,
        300,
        1.5,
        true,
        (),
        json!({"a": [1, 2]}),
        Binary(Bytes::from_static(&[1, 2, 3])),
    ))
    .unwrap();
    Packet::event("/room", "chat", args, Some(7))
}

fn decode(bytes: &[u8]) -> Result<Packet, ParseError> {
    decode_packet(&Bytes::copy_from_slice(bytes))
}

#[test]
fn encodes_the_bytes_node_produces() {
    assert_eq!(encode_packet(&event_packet()).unwrap(), hex(EVENT));
    let sid = RawValue::from_string(r#"{"sid":"abc"}"#.into()).unwrap();
    assert_eq!(
        encode_packet(&Packet::connect("/", Some(sid))).unwrap(),
        hex(CONNECT)
    );
    assert_eq!(
        encode_packet(&Packet::disconnect("/")).unwrap(),
        hex(DISCONNECT)
    );
    let args = Args::new(&(Binary(Bytes::from_static(b"xy")), "ok")).unwrap();
    assert_eq!(
        encode_packet(&Packet::ack("/", 300, args)).unwrap(),
        hex(ACK)
    );
}

#[test]
fn decodes_node_bytes_back() {
    let p = decode(&hex(EVENT)).unwrap();
    assert_eq!(p.nsp, "/room");
    let PacketData::Event { event, args, ack } = &p.data else {
        panic!("not an event: {p:?}");
    };
    assert_eq!((event.as_str(), *ack), ("chat", Some(7)));
    assert_eq!(
        std::str::from_utf8(args.json()).unwrap(),
        r#""héllo",1,-5,300,1.5,true,null,{"a":[1,2]},{"_placeholder":true,"num":0}"#
    );
    assert_eq!(args.attachments(), &[Bytes::from_static(&[1, 2, 3])]);
    // Round trip: the same bytes again.
    assert_eq!(encode_packet(&p).unwrap(), hex(EVENT));
    assert_eq!(decode(&hex(CONNECT)).unwrap().data, {
        let sid = RawValue::from_string(r#"{"sid":"abc"}"#.into()).unwrap();
        PacketData::Connect(Some(sid))
    });
    assert_eq!(decode(&hex(DISCONNECT)).unwrap(), Packet::disconnect("/"));
    let ack = decode(&hex(ACK)).unwrap();
    assert_eq!(encode_packet(&ack).unwrap(), hex(ACK));
    let (b, s): (Binary, String) = ack.args().unwrap().decode().unwrap();
    assert_eq!((b.0.as_ref(), s.as_str()), (&b"xy"[..], "ok"));
}

#[test]
fn round_trips_sizes_and_connect_error() {
    let long = "x".repeat(70_000);
    let many: Vec<u32> = (0..20).collect();
    let big = Binary(Bytes::from(vec![7u8; 300]));
    let args = Args::new(&(long.as_str(), &many, big, -70_000i64, u64::MAX, 1e300)).unwrap();
    let p = Packet::event("/", "e", args, None);
    let back = decode(&encode_packet(&p).unwrap()).unwrap();
    let (s, v, b, n, u, f): (String, Vec<u32>, Binary, i64, u64, f64) =
        back.args().unwrap().decode().unwrap();
    assert_eq!(
        (s.len(), v, b.0.len(), n, u, f),
        (70_000, many, 300, -70_000, u64::MAX, 1e300)
    );
    let err = Packet::connect_error(
        "/x",
        "nope",
        Some(&RawValue::from_string("{\"k\":1}".into()).unwrap()),
    );
    assert_eq!(decode(&encode_packet(&err).unwrap()).unwrap(), err);
}

#[test]
fn accepts_array_buffers_and_drops_undefined_keys() {
    // {type:2,data:["e",<ext 0: ArrayBuffer "ab">,{u:undefined,k:1}],nsp:"/"}
    let mut m = hex(
        "83a474797065 02 a464617461 93 a165 c70200 6162 82 a175 d40000 a16b 01 a36e7370 a12f"
            .replace(' ', "")
            .as_str(),
    );
    let p = decode(&m).unwrap();
    let args = p.args().unwrap();
    assert_eq!(
        std::str::from_utf8(args.json()).unwrap(),
        r#"{"_placeholder":true,"num":0},{"k":1}"#
    );
    assert_eq!(args.attachments(), &[Bytes::from_static(b"ab")]);
    // A Date (fixext 8) is refused.
    m.truncate(m.len() - 6);
    assert!(decode(&m).is_err());
}

#[test]
fn appends_a_recovery_offset_to_the_data_array() {
    let p = Packet::event("/", "e", Args::new(&(1, 2)).unwrap(), None);
    let out = append_string_arg(&Bytes::from(encode_packet(&p).unwrap()), "42").unwrap();
    let back = decode(&out).unwrap();
    assert_eq!(
        back.args().unwrap().decode::<(u8, u8, String)>().unwrap(),
        (1, 2, "42".into())
    );
    // 15 elements: the array header grows from fixarray to array 16.
    let many: Vec<u8> = (0..14).collect();
    let p = Packet::event("/", "e", Args::spread(&many).unwrap(), None);
    let out = append_string_arg(&Bytes::from(encode_packet(&p).unwrap()), "7").unwrap();
    let v: Vec<Value> = decode(&out).unwrap().args().unwrap().decode().unwrap();
    assert_eq!((v.len(), v[14].clone()), (15, json!("7")));
    assert!(append_string_arg(
        &Bytes::from(encode_packet(&Packet::disconnect("/")).unwrap()),
        "1"
    )
    .is_none());
}

#[test]
fn refuses_hostile_and_misshapen_packets() {
    let bad = [
        "",                                                            // empty
        "c1",                                                          // unused marker
        "90",                                                          // not a map
        "81a474797065 05",                                             // no binary types in msgpack
        "82a474797065 02 a464617461 91a3666f6f",                       // no nsp
        "83a474797065 02 a36e7370 a12f a464617461 90",                 // empty event
        "83a474797065 02 a36e7370 a12f a464617461 91a7636f6e6e656374", // reserved "connect"
        "83a474797065 03 a36e7370 a12f a464617461 90",                 // ack without id
        "84a474797065 02 a36e7370 a12f a464617461 91a165 a26964 ff",   // negative id
        "82a474797065 01 a36e7370 a12f 00",                            // trailing byte
        "83a474797065 01 a36e7370 a12f a464617461 90",                 // disconnect with data
        "83a474797065 02 a36e7370 a12f a464617461 dd7fffffff",         // huge declared length
        "83a474797065 02 a36e7370 a12f a464617461 91a2c328",           // invalid UTF-8
    ];
    for h in bad {
        assert!(decode(&hex(&h.replace(' ', ""))).is_err(), "accepted {h}");
    }
    // Every prefix of a valid packet is an error, never a panic.
    let full = hex(EVENT);
    for n in 0..full.len() {
        assert!(decode(&full[..n]).is_err());
    }
    // Nesting: MAX_DEPTH levels (the data array counts) pass, one more fails.
    let nested = |levels: usize| {
        let mut m = hex("83a474797065 02 a36e7370 a12f a464617461 92 a165"
            .replace(' ', "")
            .as_str());
        m.extend(std::iter::repeat_n(0x91, levels - 1));
        m.push(0xc0);
        m
    };
    assert!(decode(&nested(MAX_DEPTH)).is_ok());
    assert!(matches!(
        decode(&nested(MAX_DEPTH + 1)),
        Err(ParseError::InvalidPayload)
    ));
}

#[test]
fn decoder_takes_binary_messages_only() {
    let mut d = Decoder::with_parser(Parser::Msgpack, 10);
    assert!(matches!(
        d.decode_text(Bytes::from_static(b"2[\"a\"]")),
        Err(ParseError::TextWithMsgpack)
    ));
    let p = d.decode_binary(Bytes::from(hex(EVENT))).unwrap().unwrap();
    assert_eq!(p, decode(&hex(EVENT)).unwrap());
}

/// Found by the `sio_msgpack` fuzz target: a float near the bottom of the f64
/// range came back one unit in the last place off after its trip through the
/// JSON text (serde_json's fast float parser is not exact without
/// `float_roundtrip`).
#[test]
fn floats_survive_the_trip_through_json_text_exactly() {
    let input: &[u8] = &[
        0x83, 0xa4, b't', b'y', b'p', b'e', 0x02, 0xa4, b'd', b'a', b't', b'a', 0x93, 0xa4, b'c',
        b'h', b'a', b't', 0xcb, 0x01, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3c, 0xc0, 0xcb, 0x3f, 0xb9,
        0x99, 0x99, 0x99, 0x99, 0x99, 0x9a, 0xa3, b'n', b's', b'p', 0xa1, b'/',
    ];
    let packet = decode(input).unwrap();
    let again = encode_packet(&packet).unwrap();
    assert_eq!(&again[..], input, "the floats come back bit for bit");
}
