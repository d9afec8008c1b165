//! Decoding: conformance strings and every validity rule.

use bytes::Bytes;
use serde_json::{json, Value};

use super::{decode, decode_with};
use crate::parser::{Args, Binary, Decoder, Packet, PacketData, ParseError};

/// Short description of a decoded packet for table comparisons:
/// `type nsp ack event json #attachments`.
fn describe(p: &Packet) -> String {
    let nsp = &p.nsp;
    match &p.data {
        PacketData::Connect(None) => format!("connect {nsp}"),
        PacketData::Connect(Some(r)) => format!("connect {nsp} {}", r.get()),
        PacketData::Disconnect => format!("disconnect {nsp}"),
        PacketData::ConnectError(r) => format!("connect_error {nsp} {}", r.get()),
        PacketData::Event { event, args, ack } => format!(
            "event {nsp} {ack:?} {event} [{}] {}",
            String::from_utf8_lossy(args.json()),
            args.attachments().len()
        ),
        PacketData::Ack { ack, args } => format!(
            "ack {nsp} {ack} [{}] {}",
            String::from_utf8_lossy(args.json()),
            args.attachments().len()
        ),
    }
}

#[test]
fn valid_packets() {
    let cases: &[(&str, &[&[u8]], &str)] = &[
        ("0", &[], "connect /"),
        (r#"0{"token":"123"}"#, &[], r#"connect / {"token":"123"}"#),
        ("0/custom,", &[], "connect /custom"),
        (
            r#"0/custom,{"token":"123"}"#,
            &[],
            r#"connect /custom {"token":"123"}"#,
        ),
        ("0/custom", &[], "connect /custom"),
        ("0/", &[], "connect /"),
        ("0/a b/c,", &[], "connect /a b/c"),
        ("0 {} ", &[], "connect / {}"),
        ("07{}", &[], "connect / {}"), // ack id accepted and ignored (as Node)
        ("1", &[], "disconnect /"),
        ("1/custom,", &[], "disconnect /custom"),
        ("1/custom,1", &[], "disconnect /custom"), // ack id ignored (as Node)
        (
            r#"2["message",1,"2",{"3":[true]}]"#,
            &[],
            r#"event / None message [1,"2",{"3":[true]}] 0"#,
        ),
        (
            r#"2456["message-with-ack",1,"2",{"3":[false]}]"#,
            &[],
            r#"event / Some(456) message-with-ack [1,"2",{"3":[false]}] 0"#,
        ),
        (r#"2/custom,7["a"]"#, &[], "event /custom Some(7) a [] 0"),
        ("2[1,2]", &[], "event / None 1 [2] 0"),
        ("2[-1.5e3]", &[], "event / None -1.5e3 [] 0"),
        (r#"2["a\"b\u00e9"]"#, &[], "event / None a\"b\u{e9} [] 0"),
        (
            r#"2 [ "a" , 1 , {"k" : [ 2 ]} ] "#,
            &[],
            r#"event / None a [1 , {"k" : [ 2 ]}] 0"#,
        ),
        (
            r#"2["a",{"_placeholder":true,"num":0}]"#,
            &[],
            r#"event / None a [{"_placeholder":true,"num":0}] 0"#,
        ),
        (
            r#"52-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            &[b"\x01\x02", b"\x03"],
            r#"event / None message [{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}] 2"#,
        ),
        (
            r#"52-789["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            &[b"a", b"b"],
            r#"event / Some(789) message [{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}] 2"#,
        ),
        (
            r#"51-/custom,3["x",{"_placeholder":true,"num":0.0}]"#,
            &[b""],
            r#"event /custom Some(3) x [{"_placeholder":true,"num":0.0}] 1"#,
        ),
        (r#"50-["x",1]"#, &[], "event / None x [1] 0"),
        (
            r#"502-["x",{"k":[1]}]"#,
            &[b"", b""],
            r#"event / None x [{"k":[1]}] 2"#,
        ),
        ("3456[]", &[], "ack / 456 [] 0"),
        (
            r#"3/custom,1[1,"2",{"3":[false]}]"#,
            &[],
            r#"ack /custom 1 [1,"2",{"3":[false]}] 0"#,
        ),
        (
            r#"61-5[{"_placeholder":true,"num":0}]"#,
            &[b"z"],
            r#"ack / 5 [{"_placeholder":true,"num":0}] 1"#,
        ),
        (
            r#"4{"message":"x"}"#,
            &[],
            r#"connect_error / {"message":"x"}"#,
        ),
        (r#"4/random,"boom""#, &[], r#"connect_error /random "boom""#),
    ];
    for (text, bins, want) in cases {
        match decode_with(text, bins) {
            Ok(p) => assert_eq!(&describe(&p), want, "input {text:?}"),
            Err(e) => panic!("input {text:?}: unexpected error {e}"),
        }
    }
}

#[test]
fn invalid_packets() {
    use ParseError as E;
    type Check = fn(&ParseError) -> bool;
    let cases: &[(&str, Check)] = &[
        ("", |e| matches!(e, E::UnknownType)),
        ("abc", |e| matches!(e, E::UnknownType)),
        ("7", |e| matches!(e, E::UnknownType)),
        ("2{}", |e| matches!(e, E::InvalidPayload)),
        (r#"2abc["a"]"#, |e| matches!(e, E::InvalidPayload)),
        ("2[]", |e| matches!(e, E::InvalidPayload)),
        ("2", |e| matches!(e, E::InvalidPayload)),
        ("21", |e| matches!(e, E::InvalidPayload)),
        (r#"2[{"toString":"x"}]"#, |e| matches!(e, E::InvalidPayload)),
        ("2[null]", |e| matches!(e, E::InvalidPayload)),
        ("2[true]", |e| matches!(e, E::InvalidPayload)),
        ("2[[\"a\"]]", |e| matches!(e, E::InvalidPayload)),
        (r#"2["a""#, |e| matches!(e, E::InvalidPayload)),
        (r#"2["a"]x"#, |e| matches!(e, E::InvalidPayload)),
        (r#"2["a",]"#, |e| matches!(e, E::InvalidPayload)),
        ("2 ", |e| matches!(e, E::InvalidPayload)),
        (
            r#"2["connect"]"#,
            |e| matches!(e, E::ReservedEvent(n) if *n == "connect"),
        ),
        (r#"2["disconnecting",1]"#, |e| {
            matches!(e, E::ReservedEvent(_))
        }),
        (r#"2["newListener"]"#, |e| matches!(e, E::ReservedEvent(_))),
        (r#"2["\u0063onnect_error"]"#, |e| {
            matches!(e, E::ReservedEvent(_))
        }),
        (r#"2[""#, |e| matches!(e, E::InvalidPayload)),
        (r#"299999999999999999999["a"]"#, |e| {
            matches!(e, E::InvalidAckId)
        }),
        ("3[]", |e| matches!(e, E::InvalidAckId)),
        ("31", |e| matches!(e, E::InvalidPayload)),
        ("31{}", |e| matches!(e, E::InvalidPayload)),
        ("31\"x\"", |e| matches!(e, E::InvalidPayload)),
        ("0[]", |e| matches!(e, E::InvalidPayload)),
        (r#"0"tok""#, |e| matches!(e, E::InvalidPayload)),
        ("0null", |e| matches!(e, E::InvalidPayload)),
        ("0{", |e| matches!(e, E::InvalidPayload)),
        ("1{}", |e| matches!(e, E::InvalidPayload)),
        ("1/custom,x", |e| matches!(e, E::InvalidPayload)),
        ("1[]", |e| matches!(e, E::InvalidPayload)),
        ("4", |e| matches!(e, E::InvalidPayload)),
        ("4[]", |e| matches!(e, E::InvalidPayload)),
        ("41", |e| matches!(e, E::InvalidPayload)),
        // With the Engine.IO `4` still in front this is a CONNECT_ERROR with
        // a garbage payload.
        (r#"451000000-["a"]"#, |e| matches!(e, E::InvalidPayload)),
        (r#"51000000-["a"]"#, |e| matches!(e, E::TooManyAttachments)),
        (r#"511-["a"]"#, |e| matches!(e, E::TooManyAttachments)),
        (r#"599999999999999999999999-["a"]"#, |e| {
            matches!(e, E::InvalidAttachments)
        }),
        ("5-1[]", |e| matches!(e, E::InvalidAttachments)),
        (r#"5-["a"]"#, |e| matches!(e, E::InvalidAttachments)),
        ("5", |e| matches!(e, E::InvalidAttachments)),
        ("51", |e| matches!(e, E::InvalidAttachments)),
        (r#"51["a"]"#, |e| matches!(e, E::InvalidAttachments)),
        (r#"5a-["a"]"#, |e| matches!(e, E::InvalidAttachments)),
        ("61-[]", |e| matches!(e, E::InvalidAckId)),
        (r#"51-["connect"]"#, |e| matches!(e, E::ReservedEvent(_))),
    ];
    for (text, check) in cases {
        match decode(text) {
            Ok(p) => panic!("input {text:?}: accepted as {p:?}"),
            Err(e) => assert!(check(&e), "input {text:?}: wrong error {e:?}"),
        }
    }
}

#[test]
fn invalid_bytes() {
    let mut d = Decoder::new(10);
    // Namespace that is not UTF-8.
    let r = d.decode_text(Bytes::from_static(b"0/\xff,"));
    assert!(matches!(r, Err(ParseError::InvalidNamespace)));
    // Payload that is not UTF-8.
    let r = d.decode_text(Bytes::from_static(b"2[\"\xff\"]"));
    assert!(matches!(r, Err(ParseError::InvalidPayload)));
    let r = d.decode_text(Bytes::from_static(b"2[\"a\",\"\xc3\"]"));
    assert!(matches!(r, Err(ParseError::InvalidPayload)));
}

#[test]
fn illegal_placeholders() {
    let bad = [
        r#"{"_placeholder":true,"num":-1}"#,
        r#"{"_placeholder":true,"num":2}"#,
        r#"{"_placeholder":true,"num":"0"}"#,
        r#"{"_placeholder":true,"num":0.5}"#,
        r#"{"_placeholder":true}"#,
        r#"{"_placeholder":true,"num":null}"#,
        r#"[{"x":{"_placeholder":true,"num":7}}]"#,
        r#"{"num":0,"_placeholder":true,"num":9}"#,
    ];
    for ph in bad {
        for text in [format!(r#"52-["m",{ph}]"#), format!(r#"62-1[{ph}]"#)] {
            let mut d = Decoder::new(10);
            assert!(d.decode_text(Bytes::from(text.clone())).unwrap().is_none());
            assert!(d.decode_binary(Bytes::from_static(b"a")).unwrap().is_none());
            let r = d.decode_binary(Bytes::from_static(b"b"));
            assert!(
                matches!(r, Err(ParseError::IllegalPlaceholder)),
                "{text}: {r:?}"
            );
            assert!(!d.is_waiting());
        }
    }
    // `_placeholder` other than `true` is an ordinary object.
    let ok = r#"52-["m",{"_placeholder":1,"num":9},{"_placeholder":"true"}]"#;
    assert!(decode_with(ok, &[b"", b""]).is_ok());
}

#[test]
fn attachment_state_machine() {
    let mut d = Decoder::new(2);
    assert!(matches!(
        d.decode_binary(Bytes::from_static(b"x")),
        Err(ParseError::UnexpectedBinary)
    ));
    assert!(d
        .decode_text(Bytes::from_static(br#"52-["a"]"#))
        .unwrap()
        .is_none());
    assert!(d.is_waiting());
    assert!(matches!(
        d.decode_text(Bytes::from_static(b"1")),
        Err(ParseError::UnexpectedText)
    ));
    assert!(!d.is_waiting());
    // Idle again: a new packet decodes.
    assert!(d.decode_text(Bytes::from_static(b"1")).unwrap().is_some());
    // Bound is inclusive.
    assert!(d
        .decode_text(Bytes::from_static(br#"52-["a"]"#))
        .unwrap()
        .is_none());
    d.reset();
    assert!(matches!(
        d.decode_text(Bytes::from_static(br#"53-["a"]"#)),
        Err(ParseError::TooManyAttachments)
    ));
    let mut d0 = Decoder::new(0);
    assert!(d0
        .decode_text(Bytes::from_static(br#"50-["a"]"#))
        .unwrap()
        .is_some());
    assert!(matches!(
        d0.decode_text(Bytes::from_static(br#"51-["a"]"#)),
        Err(ParseError::TooManyAttachments)
    ));
    assert_eq!(Decoder::default().max_attachments(), 10);
}

#[test]
fn args_are_zero_copy_slices() {
    let text = Bytes::from_static(br#"2["ev",1,"2"]"#);
    let mut d = Decoder::default();
    let p = d.decode_text(text.clone()).unwrap().unwrap();
    let args = p.args().unwrap();
    assert_eq!(args.json(), br#"1,"2""#);
    let start = args.json().as_ptr() as usize - text.as_ptr() as usize;
    assert_eq!(start, 7);
}

#[test]
fn typed_args_and_binary_resolution() {
    let p = decode(r#"2["message",1,"2",{"3":[true]}]"#).unwrap();
    let args = p.args().unwrap();
    let (a, b, c) = args.decode::<(i64, String, Value)>().unwrap();
    assert_eq!((a, b.as_str(), c), (1, "2", json!({"3":[true]})));
    assert_eq!(args.len(), 3);

    let p = decode_with(
        r#"51-["up",{"name":"f","data":{"_placeholder":true,"num":0}}]"#,
        &[b"\xde\xad"],
    )
    .unwrap();
    #[derive(serde::Deserialize)]
    struct Upload {
        name: String,
        data: Binary,
    }
    let (u,): (Upload,) = p.args().unwrap().decode().unwrap();
    assert_eq!(u.name, "f");
    assert_eq!(u.data, Binary(Bytes::from_static(b"\xde\xad")));
    assert_eq!(p.attachments(), &[Bytes::from_static(b"\xde\xad")]);
}

#[test]
fn nesting_depth_is_bounded() {
    // 100 000 unclosed brackets: an error, not a stack overflow.
    let deep = format!("2{}", "[".repeat(100_000));
    assert!(matches!(decode(&deep), Err(ParseError::InvalidPayload)));
    let deep = format!("2[\"a\",{}{}]", "[".repeat(100_000), "]".repeat(100_000));
    assert!(matches!(decode(&deep), Err(ParseError::InvalidPayload)));
    let deep = format!("0{}", "{\"a\":".repeat(100_000));
    assert!(decode(&deep).is_err());
    // The deepest accepted payload still deserializes.
    let inner = crate::parser::MAX_DEPTH - 1;
    let ok = format!("2[\"a\",{}{}]", "[".repeat(inner), "]".repeat(inner));
    let p = decode(&ok).unwrap();
    assert!(p.args().unwrap().decode::<Vec<Value>>().is_ok());
    let too_deep = format!(
        "2[\"a\",{}{}]",
        "[".repeat(inner + 1),
        "]".repeat(inner + 1)
    );
    assert!(matches!(decode(&too_deep), Err(ParseError::InvalidPayload)));
}

#[test]
fn decoded_args_equal_built_args() {
    let p = decode(r#"2["m",1,"2"]"#).unwrap();
    assert_eq!(p.args(), Some(&Args::new(&(1, "2")).unwrap()));
}
