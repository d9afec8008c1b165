//! Property tests: encode/decode round trips, and no panics on any input.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::parser::{is_reserved_event, Args, Binary, Decoder, Packet, PacketData};

/// An argument tree that may contain binaries anywhere.
#[derive(Serialize, Debug, Clone)]
#[serde(untagged)]
enum Arg {
    Json(Value),
    Bin(Binary),
    List(Vec<Arg>),
    Map(BTreeMap<String, Arg>),
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{0,4}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-z]{0,6}", json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn arg() -> impl Strategy<Value = Arg> {
    let leaf = prop_oneof![
        3 => json_value().prop_map(Arg::Json),
        1 => prop::collection::vec(any::<u8>(), 0..16)
            .prop_map(|b| Arg::Bin(Binary(Bytes::from(b)))),
    ];
    leaf.prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Arg::List),
            prop::collection::btree_map("[a-z]{0,4}", inner, 0..3).prop_map(Arg::Map),
        ]
    })
}

fn args() -> impl Strategy<Value = Args> {
    prop::collection::vec(arg(), 0..5).prop_map(|v| Args::spread(&v).expect("serializable args"))
}

fn raw(v: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).expect("serializable value")
}

fn packet() -> impl Strategy<Value = Packet> {
    let nsp = "/[a-z]{0,8}";
    let event = any::<String>().prop_filter("not reserved", |e| !is_reserved_event(e));
    prop_oneof![
        (nsp, prop::option::of(json_object()))
            .prop_map(|(n, auth)| Packet::connect(n, auth.as_ref().map(raw))),
        nsp.prop_map(Packet::disconnect),
        (nsp, event, args(), prop::option::of(any::<u64>()))
            .prop_map(|(n, e, a, ack)| Packet::event(n, e, a, ack)),
        (nsp, any::<u64>(), args()).prop_map(|(n, id, a)| Packet::ack(n, id, a)),
        (nsp, any::<String>(), prop::option::of(json_value()))
            .prop_map(|(n, m, d)| Packet::connect_error(n, &m, d.as_ref().map(raw).as_deref())),
        (nsp, any::<String>()).prop_map(|(n, m)| Packet {
            nsp: n.into(),
            data: PacketData::ConnectError(raw(&Value::String(m))),
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn round_trip(p in packet()) {
        let text = p.encode();
        prop_assert_eq!(p.encoded_len(), text.len(), "encoded_len of {}", text);
        let mut d = Decoder::new(usize::MAX);
        let mut out = d.decode_text(Bytes::from(text.clone()))
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        for att in p.attachments() {
            prop_assert!(out.is_none());
            out = d.decode_binary(att.clone())
                .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        }
        prop_assert!(!d.is_waiting());
        prop_assert_eq!(out.as_ref(), Some(&p), "text {}", text);
        // Encoding is stable.
        prop_assert_eq!(out.map(|q| q.encode()), Some(text));
    }

    #[test]
    fn args_decode_matches_values(values in prop::collection::vec(json_value(), 0..5)) {
        let a = Args::spread(&values).expect("serializable");
        prop_assert_eq!(a.len(), values.len());
        let back: Vec<Value> = a.decode().expect("decodable");
        // serde_json (without `float_roundtrip`) may parse a float to a
        // neighbour of the printed one: compare with a plain reparse.
        let text = serde_json::to_string(&values).expect("serializable");
        let values: Vec<Value> = serde_json::from_str(&text).expect("parsable");
        prop_assert_eq!(&back, &values);
        for (i, v) in values.iter().enumerate() {
            prop_assert_eq!(&a.get::<Value>(i).expect("decodable"), v);
        }
    }

    #[test]
    fn decoder_never_panics(
        max in 0usize..12,
        msgs in prop::collection::vec(
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..64).prop_map(|b| (true, b)),
                (
                    prop::sample::select(vec![
                        "0", "0/", "0/a,", "1", "2", "2[", "2[\"a\",", "3", "31[",
                        "4", "5", "51-", "52-", "52-/a,1[\"e\",", "61-1[", "6",
                    ]),
                    "[\\[\\]{}\",:0-9a-z_ \\\\-]{0,24}",
                ).prop_map(|(p, s)| (true, format!("{p}{s}").into_bytes())),
                (
                    prop::sample::select(vec![
                        "{\"_placeholder\":true,\"num\":0}",
                        "{\"_placeholder\":true,\"num\":1}",
                        "{\"_placeholder\":true,\"num\":-1}",
                        "{\"_placeholder\":true,\"num\":1e400}",
                        "{\"_placeholder\":true}",
                    ]),
                    0usize..3,
                ).prop_map(|(ph, n)| (true, format!("5{n}-[\"e\",{ph}]").into_bytes())),
                prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| (false, b)),
            ],
            0..8,
        ),
    ) {
        let mut d = Decoder::new(max);
        for (is_text, bytes) in msgs {
            let bytes = Bytes::from(bytes);
            let r = if is_text { d.decode_text(bytes) } else { d.decode_binary(bytes) };
            if let Ok(Some(p)) = r {
                // Whatever was accepted re-encodes to an equal packet, and its
                // args can be read.
                let text = p.encode();
                let mut again = Decoder::new(usize::MAX);
                let mut q = again.decode_text(Bytes::from(text.clone()));
                for att in p.attachments() {
                    q = again.decode_binary(att.clone());
                }
                let q = q.ok().flatten();
                prop_assert_eq!(q.as_ref(), Some(&p), "re-encoded as {}", text);
                if let Some(a) = p.args() {
                    // (`Value` may fail on numbers beyond f64, e.g. `1e400`.)
                    let _ = a.decode::<Vec<Value>>();
                    let raws = a.decode::<Vec<Box<RawValue>>>();
                    prop_assert_eq!(raws.map(|r| r.len()).ok(), Some(a.len()));
                }
            }
        }
    }
}
