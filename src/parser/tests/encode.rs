//! Encoding: exact expected strings.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{decode, decode_with};
use crate::parser::{Args, Binary, Packet, PacketData};

fn raw(s: &str) -> Box<RawValue> {
    RawValue::from_string(s.to_owned()).unwrap()
}

#[test]
fn echo_as_ack() {
    let p = decode(r#"2456["message-with-ack",1,"2",{"3":[false]}]"#).unwrap();
    let PacketData::Event {
        args,
        ack: Some(id),
        ..
    } = p.data
    else {
        panic!("not an event with ack: {p:?}");
    };
    let reply = Packet::ack(p.nsp, id, args);
    assert_eq!(reply.encode(), r#"3456[1,"2",{"3":[false]}]"#);
}

#[test]
fn event_back_with_same_args() {
    let p = decode(r#"2["message",1,"2",{"3":[true]}]"#).unwrap();
    let args = p.args().unwrap().clone();
    let back = Packet::event("/", "message-back", args, None);
    assert_eq!(back.encode(), r#"2["message-back",1,"2",{"3":[true]}]"#);
}

#[test]
fn encode_into_appends() {
    let mut out = String::from("4");
    Packet::event("/", "a", Args::empty(), None).encode_into(&mut out);
    assert_eq!(out, r#"42["a"]"#);
}

#[test]
fn simple_packets() {
    let cases: Vec<(Packet, &str)> = vec![
        (Packet::connect("/", None), "0"),
        (Packet::connect("/custom", None), "0/custom,"),
        (
            Packet::connect("/", Some(raw(r#"{"sid":"abc"}"#))),
            r#"0{"sid":"abc"}"#,
        ),
        (
            Packet::connect("/admin", Some(raw(r#"{"sid":"abc","pid":"x"}"#))),
            r#"0/admin,{"sid":"abc","pid":"x"}"#,
        ),
        (Packet::disconnect("/"), "1"),
        (Packet::disconnect("/chat"), "1/chat,"),
        (Packet::disconnect(""), "1"),
        (
            Packet::connect_error("/random", "Invalid namespace", None),
            r#"4/random,{"message":"Invalid namespace"}"#,
        ),
        (
            Packet::connect_error("/", "not \"authorized\"", Some(&raw(r#"{"code":1}"#))),
            r#"4{"message":"not \"authorized\"","data":{"code":1}}"#,
        ),
        (
            Packet::event("/", "ev", Args::new(&(1, "2")).unwrap(), None),
            r#"2["ev",1,"2"]"#,
        ),
        (
            Packet::event("/", "ev", Args::empty(), Some(0)),
            r#"20["ev"]"#,
        ),
        (
            Packet::event("/", "q\"\n", Args::new("x").unwrap(), None),
            r#"2["q\"\n","x"]"#,
        ),
        (Packet::ack("/", 12, Args::empty()), "312[]"),
        (
            Packet::ack("/nsp", 3, Args::one(&[1, 2]).unwrap()),
            "3/nsp,3[[1,2]]",
        ),
    ];
    for (p, want) in cases {
        assert_eq!(p.encode(), want, "{p:?}");
    }
}

#[test]
fn binary_event_with_namespace_and_ack() {
    let args = Args::new(&(
        "a",
        Binary(Bytes::from_static(b"\x00\x01")),
        vec![Binary(Bytes::from_static(b"\x02"))],
    ))
    .unwrap();
    let p = Packet::event("/custom", "upload", args, Some(42));
    assert_eq!(
        p.encode(),
        r#"52-/custom,42["upload","a",{"_placeholder":true,"num":0},[{"_placeholder":true,"num":1}]]"#
    );
    assert_eq!(
        p.attachments(),
        &[Bytes::from_static(b"\x00\x01"), Bytes::from_static(b"\x02")]
    );
    // And it decodes back to the same packet.
    let again = decode_with(&p.encode(), &[b"\x00\x01", b"\x02"]).unwrap();
    assert_eq!(again, p);

    let ack = Packet::ack(
        "/",
        7,
        Args::new(&[Binary(Bytes::from_static(b"z"))]).unwrap(),
    );
    assert_eq!(ack.encode(), r#"61-7[{"_placeholder":true,"num":0}]"#);
    assert_eq!(ack.type_char(), '6');
}

#[test]
fn recovery_offset_is_appended() {
    let mut args = Args::new(&("hello",)).unwrap();
    args.push("Q87GLlX.0").unwrap();
    let p = Packet::event("/", "msg", args, None);
    assert_eq!(p.encode(), r#"2["msg","hello","Q87GLlX.0"]"#);
}
