//! Exact bytes of known messages: the expected values are what
//! `@socket.io/redis-adapter` 8.3.0 (notepack.io 3.0.1, `JSON.stringify`) writes
//! for the same message.

use rmpv::Value as Mp;

use super::*;
use crate::{adapter::EncodedPacket, engine::Frame};

fn msgpack_bytes(v: &Mp) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, v).unwrap();
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn packet(text: &str, attachments: &[&[u8]]) -> EncodedPacket {
    let frames: Vec<Frame> = std::iter::once(Frame::text(text.to_string()))
        .chain(
            attachments
                .iter()
                .map(|a| Frame::Binary(Bytes::copy_from_slice(a))),
        )
        .collect();
    EncodedPacket(frames.into())
}

fn opts(rooms: &[&str], except: &[&str], volatile: bool) -> BroadcastOptions {
    BroadcastOptions {
        rooms: rooms.iter().map(|s| s.to_string()).collect(),
        except: except.iter().map(|s| s.to_string()).collect(),
        flags: BroadcastFlags {
            volatile,
            ..Default::default()
        },
    }
}

fn parts(p: &EncodedPacket) -> EventParts<'_> {
    super::super::super::codec::event_parts(p).unwrap()
}

/// notepack.encode(["abc123", {type:2, data:["hello",1,"two",{three:[3]}], nsp:"/"},
/// {rooms:["r"], except:["x"], flags:{}}])
const BROADCAST: &str = "93a661626331323383a47479706502a46461746194a568656c6c6f01a374776f81a574687265659103a36e7370a12f83a5726f6f6d7391a172a665786365707491a178a5666c61677380";

#[test]
fn a_broadcast_is_written_as_node_writes_it() {
    let p = packet(r#"42["hello",1,"two",{"three":[3]}]"#, &[]);
    let o = opts(&["r"], &["x"], false);
    let msg = broadcast_message("abc123", "/", &parts(&p), &o).unwrap();
    assert_eq!(hex(&msg), BROADCAST);
    assert_eq!(broadcast_channel("socket.io#/#", &o), "socket.io#/#r#");
    assert_eq!(
        broadcast_channel("socket.io#/#", &opts(&["r", "s"], &[], false)),
        "socket.io#/#"
    );
    assert_eq!(
        broadcast_channel("socket.io#/#", &opts(&[], &[], false)),
        "socket.io#/#"
    );
}

#[test]
fn binary_is_inline_and_volatile_is_a_flag() {
    // ["abc123", {type:2, data:["bin", <01 02 03>, {n: <04>}], nsp:"/chat"},
    //  {rooms:[], except:[], flags:{volatile:true}}]
    let expected = "93a661626331323383a47479706502a46461746193a362696ec40301020381a16ec40104a36e7370a52f6368617483a5726f6f6d7390a665786365707490a5666c61677381a8766f6c6174696c65c3";
    let p = packet(
        r#"452-/chat,["bin",{"_placeholder":true,"num":0},{"n":{"_placeholder":true,"num":1}}]"#,
        &[&[1, 2, 3], &[4]],
    );
    let msg = broadcast_message("abc123", "/chat", &parts(&p), &opts(&[], &[], true)).unwrap();
    assert_eq!(hex(&msg), expected);
    let b = parse_broadcast(&msg).unwrap();
    assert_eq!(b.nsp, "/chat");
    assert_eq!(
        b.attachments,
        vec![Bytes::from_static(&[1, 2, 3]), Bytes::from_static(&[4])]
    );
    assert_eq!(
        b.data,
        r#"["bin",{"_placeholder":true,"num":0},{"n":{"_placeholder":true,"num":1}}]"#
    );
    assert!(b.opts.flags.volatile && b.opts.flags.local);
}

#[test]
fn numbers_take_notepacks_smallest_forms() {
    // ["u", {type:2, data:["n",-7,4.5,300,-200,70000,1.0,true,null], nsp:"/"}, {rooms:[], except:[], flags:{}}]
    let expected = "93a17583a47479706502a46461746199a16ef9cb4012000000000000cd012cd1ff38ce0001117001c3c0a36e7370a12f83a5726f6f6d7390a665786365707490a5666c61677380";
    let p = packet(r#"42["n",-7,4.5,300,-200,70000,1.0,true,null]"#, &[]);
    let msg = broadcast_message("u", "/", &parts(&p), &opts(&[], &[], false)).unwrap();
    assert_eq!(hex(&msg), expected);
}

#[test]
fn a_broadcast_with_acks_and_its_acks_are_msgpack_maps() {
    // {uid:"abc123", requestId:"req1", type:7, packet:{type:2, data:["ask","x"], nsp:"/"},
    //  opts:{rooms:["a","b"], except:[], flags:{}}}
    let expected = "85a3756964a6616263313233a9726571756573744964a472657131a47479706507a67061636b657483a47479706502a46461746192a361736ba178a36e7370a12fa46f70747383a5726f6f6d7392a161a162a665786365707490a5666c61677380";
    // The frame's ack id is not sent: each server numbers its own acks.
    let p = packet(r#"4212["ask","x"]"#, &[]);
    let msg = broadcast_request(
        "abc123",
        "req1",
        "/",
        &parts(&p),
        &opts(&["a", "b"], &[], false),
    )
    .unwrap();
    assert_eq!(hex(&msg), expected);
    let read = parse_json_or_msgpack(&msg).unwrap();
    assert_eq!(read.json["type"], 7);
    assert_eq!(read.json["packet"]["data"], serde_json::json!(["ask", "x"]));

    // {type:9, requestId:"req1", packet:"answer"} and {…, packet:{b:<07>}}
    let ack = Data {
        json: serde_json::json!("answer"),
        attachments: Vec::new(),
    };
    assert_eq!(
        hex(&ack_response("req1", &ack)),
        "83a47479706509a9726571756573744964a472657131a67061636b6574a6616e73776572"
    );
    let bin = Data {
        json: serde_json::json!({"b": {"_placeholder": true, "num": 0}}),
        attachments: vec![Bytes::from_static(&[7])],
    };
    let bytes = ack_response("req1", &bin);
    assert_eq!(
        hex(&bytes),
        "83a47479706509a9726571756573744964a472657131a67061636b657481a162c40107"
    );
    let read = parse_json_or_msgpack(&bytes).unwrap();
    assert_eq!(read.attachments, vec![Bytes::from_static(&[7])]);
}

#[test]
fn requests_and_answers_are_json_in_nodes_key_order() {
    let o = opts(&["a"], &["b"], false);
    assert_eq!(
        rooms_request("abc123", request::REMOTE_JOIN, &o, &["j".into()]),
        r#"{"uid":"abc123","type":2,"opts":{"rooms":["a"],"except":["b"]},"rooms":["j"]}"#
    );
    assert_eq!(
        disconnect_request("abc123", &opts(&[], &[], false), true),
        r#"{"uid":"abc123","type":4,"opts":{"rooms":[],"except":[]},"close":true}"#
    );
    assert_eq!(
        fetch_request("abc123", "req1", &opts(&["a"], &[], false)),
        r#"{"uid":"abc123","requestId":"req1","type":5,"opts":{"rooms":["a"],"except":[]}}"#
    );
    assert_eq!(
        server_side_request("abc123", None, r#"["ev",1,{"a":"b"}]"#),
        r#"{"uid":"abc123","type":6,"data":["ev",1,{"a":"b"}]}"#
    );
    assert_eq!(
        server_side_request("abc123", Some("req1"), r#"["ev"]"#),
        r#"{"uid":"abc123","requestId":"req1","type":6,"data":["ev"]}"#
    );
    assert_eq!(
        server_side_response("req1", &serde_json::json!("pong")),
        r#"{"type":6,"requestId":"req1","data":"pong"}"#
    );
    assert_eq!(
        client_count_response("req1", 3),
        r#"{"type":8,"requestId":"req1","clientCount":3}"#
    );
}

#[test]
fn binary_in_json_is_written_as_a_node_buffer() {
    let v = serde_json::json!(["ev", {"_placeholder": true, "num": 0}]);
    let out = buffers_as_json(&v, &[Bytes::from_static(&[1, 2])]);
    assert_eq!(
        out,
        serde_json::json!(["ev", {"type": "Buffer", "data": [1, 2]}])
    );
}

#[test]
fn the_emitters_broadcast_is_read_and_a_missing_nsp_is_the_main_one() {
    // ["emitter", {type:2, data:["ev","x"]}, {rooms:["room"], except:[], flags:{}}]
    let bytes = unhex("93a7656d697474657282a47479706502a46461746192a26576a17883a5726f6f6d7391a4726f6f6da665786365707490a5666c61677380");
    let b = parse_broadcast(&bytes).unwrap();
    assert_eq!(b.uid, "emitter");
    assert_eq!(b.nsp, "/");
    assert_eq!(b.data, r#"["ev","x"]"#);
    assert_eq!(b.opts.rooms, vec!["room".to_string()]);
    assert!(b.opts.flags.local, "applies to this server only");
    assert!(!is_from(&bytes, "abc123"));
    assert!(is_from(&bytes, "emitter"));
    assert!(is_from(&unhex(BROADCAST), "abc123"));
    assert!(!is_from(&unhex(BROADCAST), "abc124"));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    for bad in [
        &[0x91, 0x01][..],
        &[0xc1, 0xc1],
        b"{not json",
        &[],
        &[0x93, 0xa1, b'u', 0x01, 0x80],
        &[
            0x93, 0xa1, b'u', 0x81, 0xa4, b'd', b'a', b't', b'a', 0x01, 0x80,
        ],
        &[0x92, 0xa1, b'u', 0x81, 0xa3, b'n', b's', b'p', 0x01],
    ] {
        assert!(parse_broadcast(bad).is_err(), "{bad:?}");
    }
    for bad in [&b"{not json"[..], &[0xc1], &[0x91, 0x01], &[]] {
        assert!(parse_json_or_msgpack(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_received_broadcast_becomes_the_json_text_node_would_emit() {
    // What notepack writes for data ["n",-7,4.5,300,-200,70000,1.0,true,null].
    let bytes = unhex("93a17583a47479706502a46461746199a16ef9cb4012000000000000cd012cd1ff38ce0001117001c3c0a36e7370a12f83a5726f6f6d7390a665786365707490a5666c61677380");
    let b = parse_broadcast(&bytes).unwrap();
    assert_eq!(b.data, r#"["n",-7,4.5,300,-200,70000,1,true,null]"#);
    // Escapes, a float with no fraction from another encoder, NaN, a map and
    // a timestamp (ext -1, 32 bits: 2021-01-01T00:00:00Z).
    let packet = Mp::Map(vec![
        (Mp::from("type"), Mp::from(2)),
        (
            Mp::from("data"),
            Mp::Array(vec![
                Mp::from("q\"\n\u{1}é"),
                Mp::F64(2.0),
                Mp::F64(f64::NAN),
                Mp::Map(vec![(Mp::from("k"), Mp::Binary(vec![5]))]),
                Mp::Ext(-1, 1_609_459_200u32.to_be_bytes().to_vec()),
            ]),
        ),
    ]);
    let msg = msgpack_bytes(&Mp::Array(vec![Mp::from("x"), packet, Mp::Nil]));
    let b = parse_broadcast(&msg).unwrap();
    assert_eq!(
        b.data,
        r#"["q\"\n\u0001é",2,null,{"k":{"_placeholder":true,"num":0}},"2021-01-01T00:00:00.000Z"]"#
    );
    assert_eq!(b.attachments, vec![Bytes::from_static(&[5])]);
    assert_eq!(b.opts, options_from(None));
}

#[test]
fn compress_false_is_a_flag_both_ways() {
    // ... {rooms:[], except:[], flags:{compress:false}}], as notepack writes
    // what Node's `io.compress(false).emit(...)` publishes.
    let p = packet(r#"42["e"]"#, &[]);
    let mut o = opts(&[], &[], false);
    o.flags.compress = false;
    let msg = broadcast_message("abc123", "/", &parts(&p), &o).unwrap();
    assert!(
        hex(&msg).ends_with("a5666c61677381a8636f6d7072657373c2"),
        "{}",
        hex(&msg)
    );
    let b = parse_broadcast(&msg).unwrap();
    assert!(!b.opts.flags.compress);
    let plain = broadcast_message("abc123", "/", &parts(&p), &opts(&[], &[], false)).unwrap();
    assert!(parse_broadcast(&plain).unwrap().opts.flags.compress);
}

#[test]
fn the_route_of_a_broadcast_is_its_namespace_and_rooms() {
    let route = |nsp: &str, rooms: &[&str]| Route::Rooms {
        nsp: nsp.into(),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
    };
    // notepack of ["abc123", {type: 2, data: ["ev", 1], nsp: "/chat"},
    // {rooms: ["r1", "r2"], except: [], flags: {}}], as Node's redis adapter
    // publishes io.of("/chat").to(["r1", "r2"]).emit("ev", 1).
    let node = unhex("93a661626331323383a47479706502a46461746192a2657601a36e7370a52f6368617483a5726f6f6d7392a27231a27232a665786365707490a5666c61677380");
    assert_eq!(broadcast_route(&node), route("/chat", &["r1", "r2"]));
    // The emitter's: no nsp, the main namespace.
    let emitter = unhex("93a7656d697474657282a47479706502a46461746192a26576a17883a5726f6f6d7391a4726f6f6da665786365707490a5666c61677380");
    assert_eq!(broadcast_route(&emitter), route("/", &["room"]));
    // What rsio publishes.
    assert_eq!(broadcast_route(&unhex(BROADCAST)), route("/", &["r"]));
    // Rooms []: every socket.
    let all = unhex("93a661626331323383a47479706502a46461746192a2657601a36e7370a52f6368617483a5726f6f6d7390a665786365707490a5666c61677380");
    assert_eq!(broadcast_route(&all), Route::Everyone);
    // A room that is a number (Node allows it): everywhere.
    let number = unhex("93a661626331323382a47479706502a46461746191a2657683a5726f6f6d739107a665786365707490a5666c61677380");
    assert_eq!(broadcast_route(&number), Route::Everyone);
    // Requests and answers are maps (JSON or msgpack), garbage is garbage.
    for other in [
        &br#"{"type":7,"requestId":"x","packet":{},"opts":{"rooms":["r"]}}"#[..],
        &[0x81, 0xa4, b't', b'y', b'p', b'e', 0x07],
        &[0xc1],
        &[],
        &[0x92, 0xa1, b'u', 0x80],
    ] {
        assert_eq!(broadcast_route(other), Route::Everyone, "{other:?}");
    }
}

#[test]
fn a_join_request_is_routed_as_a_join_of_its_rooms() {
    let join = |nsp: &str, rooms: &[&str]| Route::Join {
        nsp: nsp.into(),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
    };
    // Node's redis adapter: JSON.stringify({uid, type: 2, opts, rooms}).
    let node =
        br#"{"uid":"abc123","type":2,"opts":{"rooms":["room1"],"except":[]},"rooms":["r2",7]}"#;
    assert_eq!(
        message_route("socket.io-request#/chat#", node),
        join("/chat", &["r2", "7"])
    );
    // rsio's, and the older per-socket form.
    let ours = rooms_request(
        "u",
        request::REMOTE_JOIN,
        &opts(&["a"], &[], false),
        &["r".into()],
    );
    assert_eq!(
        message_route("socket.io-request#/#", ours.as_bytes()),
        join("/", &["r"])
    );
    let older = br#"{"uid":"u","type":2,"sid":"s","room":"r9"}"#;
    assert_eq!(
        message_route("socket.io-request#/#", older),
        join("/", &["r9"])
    );
    // Leaves, other requests, answers and other channels: everywhere.
    let leave = rooms_request(
        "u",
        request::REMOTE_LEAVE,
        &opts(&["a"], &[], false),
        &["r".into()],
    );
    for (channel, payload) in [
        ("socket.io-request#/#", leave.as_bytes()),
        ("socket.io-request#/#", &br#"{"type":6,"data":["e"]}"#[..]),
        ("socket.io-response#/#", &node[..]),
        ("socket.io-request#/#", b"{bad"),
    ] {
        assert_eq!(
            message_route(channel, payload),
            Route::Everyone,
            "{channel}"
        );
    }
    // Broadcasts are arrays.
    assert_eq!(
        message_route("socket.io#/#r#", &unhex(BROADCAST)),
        Route::Rooms {
            nsp: "/".into(),
            rooms: vec!["r".into()]
        }
    );
}
