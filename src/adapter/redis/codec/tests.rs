use super::*;

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

fn text(p: &EncodedPacket) -> &str {
    match &p.0[0] {
        Frame::Text(t) => t.as_str(),
        Frame::Binary(_) => panic!("binary first frame"),
    }
}

#[test]
fn hash_code_and_stream_name_match_node() {
    assert_eq!(hash_code(""), 0);
    assert_eq!(hash_code("/"), 47);
    assert_eq!(hash_code("/notifications"), -1_014_064_871);
    // JS `%` keeps the sign.
    assert_eq!(
        stream_name("socket.io", 4, "/notifications"),
        "socket.io--3"
    );
    assert_eq!(stream_name("socket.io", 1, "/notifications"), "socket.io");
    assert_eq!(stream_name("s", 4, "/"), "s-3");
    // UTF-16 code units, not bytes or chars: a surrogate pair counts twice.
    assert_eq!(hash_code("😀"), 0xD83D * 31 + 0xDE00);
}

#[test]
fn broadcast_entry_is_byte_for_byte_nodes() {
    // §3: io.to("room1").emit("hello", "world") from Node.
    let p = packet("42[\"hello\",\"world\"]", &[]);
    let parts = event_parts(&p).unwrap();
    let opts = BroadcastOptions {
        rooms: vec!["room1".into()],
        ..Default::default()
    };
    assert_eq!(
        broadcast_entry_data(&parts, &opts),
        r#"{"packet":{"type":2,"data":["hello","world"]},"opts":{"rooms":["room1"],"except":[],"flags":{}}}"#
    );
    let opts = BroadcastOptions {
        except: vec!["a\"b".into()],
        flags: BroadcastFlags {
            volatile: true,
            ..Default::default()
        },
        ..Default::default()
    };
    assert_eq!(
        options_text(&opts),
        r#"{"rooms":[],"except":["a\"b"],"flags":{"volatile":true}}"#
    );
}

#[test]
fn event_parts_reads_every_shape_rsio_encodes() {
    for (text, array) in [
        ("42[\"e\"]", "[\"e\"]"),
        ("42/admin,[\"e\",1]", "[\"e\",1]"),
        ("4217[\"e\"]", "[\"e\"]"),
        (
            "452-/a,9[\"e\",{\"_placeholder\":true,\"num\":0}]",
            "[\"e\",{\"_placeholder\":true,\"num\":0}]",
        ),
    ] {
        let two: [&[u8]; 2] = [b"x", b"y"];
        let p = packet(text, &two[..usize::from(text.starts_with("45")) * 2]);
        assert_eq!(event_parts(&p).unwrap().array, array, "{text}");
    }
    assert!(
        event_parts(&packet("43[1]", &[])).is_none(),
        "an ACK is not an event"
    );
}

#[test]
fn binary_broadcast_goes_as_base64_msgpack_with_bin() {
    let p = packet(
        "451-[\"ev\",{\"_placeholder\":true,\"num\":0}]",
        &[&[1, 2, 3]],
    );
    let parts = event_parts(&p).unwrap();
    let data = broadcast_entry_data(&parts, &BroadcastOptions::default());
    assert!(!data.starts_with('{'));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(&data)
        .unwrap();
    // The packet's data array: fixarray(2) "ev" bin8(3) 01 02 03.
    let needle = [0x92, 0xa2, b'e', b'v', 0xc4, 0x03, 1, 2, 3];
    assert!(raw.windows(needle.len()).any(|w| w == needle), "{raw:x?}");
    // And back: the bin is an attachment again, behind a placeholder.
    let back = parse_entry_data(data.as_bytes()).unwrap();
    assert_eq!(back.attachments, vec![Bytes::from_static(&[1, 2, 3])]);
    assert_eq!(
        back.json["packet"]["data"],
        serde_json::json!(["ev", {"_placeholder": true, "num": 0}])
    );
    let frame = encode_event(
        "/",
        &back.json["packet"],
        &back.attachments,
        None,
        Some("1-0"),
    )
    .unwrap();
    assert_eq!(
        text(&frame),
        "451-[\"ev\",{\"_placeholder\":true,\"num\":0},\"1-0\"]"
    );
    assert_eq!(frame.0.len(), 2);
}

#[test]
fn pubsub_payload_exact_bytes_and_round_trip() {
    let msg = Message {
        kind: kind::FETCH_SOCKETS,
        uid: "u".into(),
        nsp: "/".into(),
        data: Some(Data {
            json: serde_json::json!({"requestId": "r1"}),
            attachments: vec![],
        }),
    };
    let bytes = pubsub_payload(&msg);
    let mut want = vec![0x84, 0xa4];
    want.extend_from_slice(b"type");
    want.push(0x07);
    want.push(0xa4);
    want.extend_from_slice(b"data");
    want.extend_from_slice(&[0x81, 0xa9]);
    want.extend_from_slice(b"requestId");
    want.push(0xa2);
    want.extend_from_slice(b"r1");
    want.push(0xa3);
    want.extend_from_slice(b"uid");
    want.extend_from_slice(&[0xa1, b'u', 0xa3]);
    want.extend_from_slice(b"nsp");
    want.extend_from_slice(&[0xa1, b'/']);
    assert_eq!(bytes, want);
    assert_eq!(parse_pubsub(&bytes).unwrap(), msg);
}

#[test]
fn stream_entry_fields_round_trip_and_bad_ones_fail() {
    let fields: Vec<(&[u8], &[u8])> = vec![
        (b"uid", b"abc"),
        (b"nsp", b"/admin"),
        (b"type", b"4"),
        (
            b"data",
            br#"{"opts":{"rooms":["r"],"except":[],"flags":{}},"rooms":["x"]}"#,
        ),
    ];
    let msg = parse_entry(fields).unwrap();
    assert_eq!(
        (msg.kind, msg.uid.as_str(), msg.nsp.as_str()),
        (4, "abc", "/admin")
    );
    let opts = options_from(msg.data.as_ref().unwrap().json.get("opts"));
    assert_eq!(opts.rooms, vec!["r".to_string()]);
    assert!(
        opts.flags.local,
        "a remote operation applies to this server only"
    );
    let no_data = parse_entry(vec![(&b"nsp"[..], &b"/"[..]), (b"type", b"6")]).unwrap();
    assert!(no_data.data.is_none());
    assert!(parse_entry(vec![(&b"nsp"[..], &b"/"[..]), (b"type", b"x")]).is_err());
    assert!(
        parse_entry(vec![(&b"type"[..], &b"3"[..])]).is_err(),
        "no nsp"
    );
    assert!(parse_entry(vec![
        (&b"nsp"[..], &b"/"[..]),
        (b"type", b"3"),
        (b"data", b"not base64!")
    ])
    .is_err());
    assert!(parse_entry(vec![
        (&b"nsp"[..], &b"/"[..]),
        (b"type", b"3"),
        (b"data", b"{oops")
    ])
    .is_err());
}

#[test]
fn node_packet_to_rsio_frame() {
    let packet = serde_json::json!({"type": 2, "data": ["hello", {"a": 1}], "nsp": "/x"});
    let f = encode_event("/x", &packet, &[], None, None).unwrap();
    assert_eq!(text(&f), "42/x,[\"hello\",{\"a\":1}]");
    let f = encode_event("/", &packet, &[], Some(7), Some("1700000000000-3")).unwrap();
    assert_eq!(text(&f), "427[\"hello\",{\"a\":1},\"1700000000000-3\"]");
    let empty = serde_json::json!({"type": 2, "data": []});
    assert!(encode_event("/", &empty, &[], None, None).is_none());
}

#[test]
fn msgpack_values_become_json() {
    // A Date (timestamp 32: seconds) becomes its ISO string, as JSON.stringify.
    let ts = Mp::Ext(-1, 1_700_000_000u32.to_be_bytes().to_vec());
    assert_eq!(
        from_msgpack(ts, &mut Vec::new()),
        Value::String("2023-11-14T22:13:20.000Z".into())
    );
    let v = Mp::Map(vec![
        (Mp::from("f"), Mp::F64(1.5)),
        (Mp::from("n"), Mp::from(-3)),
        (Mp::from("b"), Mp::Binary(vec![9])),
        (Mp::from("nil"), Mp::Nil),
    ]);
    let mut att = Vec::new();
    let j = from_msgpack(v, &mut att);
    assert_eq!(
        j,
        serde_json::json!({"f": 1.5, "n": -3, "b": {"_placeholder": true, "num": 0}, "nil": null})
    );
    assert_eq!(att, vec![Bytes::from_static(&[9])]);
    let back = to_msgpack(&j, &att);
    let Mp::Map(entries) = back else { panic!() };
    assert!(entries
        .iter()
        .any(|(k, v)| k.as_str() == Some("b") && *v == Mp::Binary(vec![9])));
}

#[test]
fn entry_ids_parse_and_order() {
    assert_eq!(
        parse_entry_id("1700000000000-5"),
        Some((1_700_000_000_000, 5))
    );
    for bad in ["", "1", "-1", "1-", "a-1", "1-1-1", "1 -1"] {
        assert_eq!(parse_entry_id(bad), None, "{bad}");
    }
    assert!(entry_order("1-5").unwrap() < entry_order("2-0").unwrap());
    assert!(entry_order("2-0").unwrap() < entry_order("2-1").unwrap());
}

#[test]
fn json_broadcast_fast_path_matches_the_general_one() {
    let entry = br#"{"packet":{"type":2,"data":["ev",1,{"a":[true,null]},"\u00e9\"q"]},"opts":{"rooms":["r"],"except":["x"],"flags":{"volatile":true}}}"#;
    let fast = JsonBroadcast::parse(entry).unwrap();
    let (array, ack) = (fast.array(), fast.ack());
    let opts = fast.options();
    assert_eq!(opts.rooms, vec!["r".to_string()]);
    assert_eq!(opts.except, vec!["x".to_string()]);
    assert!(opts.flags.volatile && opts.flags.local);
    let a = encode_raw("/n", array, &[], ack, Some("5-1")).unwrap();
    let general = parse_entry_data(entry).unwrap();
    let b = encode_event("/n", &general.json["packet"], &[], None, Some("5-1")).unwrap();
    let (ta, tb) = (text(&a), text(&b));
    // Same JSON values (the fast path keeps the writer's exact text).
    let parse = |t: &str| -> Value { serde_json::from_str(t.trim_start_matches("42/n,")).unwrap() };
    assert_eq!(parse(ta), parse(tb));
    assert_eq!(ta, r#"42/n,["ev",1,{"a":[true,null]},"\u00e9\"q","5-1"]"#);
    // With an ack id, without options, and what it leaves to the general path.
    let with_id = JsonBroadcast::parse(br#"{"packet":{"type":2,"data":["e"],"id":4}}"#).unwrap();
    assert_eq!(with_id.ack(), Some(4));
    assert_eq!(
        with_id.options(),
        BroadcastOptions {
            flags: BroadcastFlags {
                local: true,
                ..Default::default()
            },
            ..Default::default()
        }
    );
    assert!(
        JsonBroadcast::parse(br#"{"packet":{"type":2,"data":["e"]},"requestId":"r"}"#).is_none()
    );
    assert!(JsonBroadcast::parse(br#"{"opts":{}}"#).is_none());
    assert!(encode_raw("/", "[]", &[], None, None).is_none());
    assert!(encode_raw("/", "{}", &[], None, None).is_none());
}

#[test]
fn compress_false_travels_as_node_writes_it() {
    let opts = BroadcastOptions {
        rooms: vec!["r".into()],
        flags: BroadcastFlags {
            compress: false,
            ..Default::default()
        },
        ..Default::default()
    };
    let text = options_text(&opts);
    assert_eq!(
        text,
        r#"{"rooms":["r"],"except":[],"flags":{"compress":false}}"#
    );
    let back = options_from(Some(&serde_json::from_str(&text).unwrap()));
    assert!(!back.flags.compress);
    // Absent (Node's default) and `true` both allow compression.
    let plain = options_from(Some(&serde_json::json!({"flags": {}})));
    assert!(plain.flags.compress);
    let on = options_from(Some(&serde_json::json!({"flags": {"compress": true}})));
    assert!(on.flags.compress);
    let fast = JsonBroadcast::parse(
        br#"{"packet":{"type":2,"data":["e"]},"opts":{"rooms":[],"except":[],"flags":{"compress":false}}}"#,
    )
    .unwrap();
    assert!(!fast.options().flags.compress);
}

fn entry(kind: &str, nsp: Option<&str>, data: &str) -> Vec<Bytes> {
    let mut fields = vec![
        Bytes::from_static(b"uid"),
        Bytes::from_static(b"abc123"),
        Bytes::from_static(b"type"),
        Bytes::from(kind.to_string()),
        Bytes::from_static(b"data"),
        Bytes::from(data.to_string()),
    ];
    if let Some(nsp) = nsp {
        fields.extend([Bytes::from_static(b"nsp"), Bytes::from(nsp.to_string())]);
    }
    fields
}

fn rooms(nsp: &str, rooms: &[&str]) -> Route {
    Route::Rooms {
        nsp: nsp.into(),
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
    }
}

#[test]
fn the_route_of_a_json_entry_is_its_rooms_unless_it_wants_acks() {
    // What Node writes for io.to("room1").emit("hello", "world").
    let node = r#"{"packet":{"type":2,"data":["hello","world"],"nsp":"/"},"opts":{"rooms":["room1"],"except":[],"flags":{}}}"#;
    assert_eq!(
        entry_route(&entry("3", Some("/"), node)),
        rooms("/", &["room1"])
    );
    // And what rsio writes: the same view.
    let p = packet("42[\"hello\",\"world\"]", &[]);
    let opts = BroadcastOptions {
        rooms: vec!["a\"b".into(), "c".into()],
        except: vec!["x".into()],
        ..Default::default()
    };
    let data = broadcast_entry_data(&event_parts(&p).unwrap(), &opts);
    assert_eq!(
        entry_route(&entry("3", Some("/chat"), &data)),
        rooms("/chat", &["a\"b", "c"])
    );
    for (kind, data) in [
        // To every socket (except some).
        (
            "3",
            r#"{"packet":{"type":2,"data":["e"]},"opts":{"rooms":[],"except":["x"],"flags":{}}}"#,
        ),
        // With acks: every server answers with its client count.
        (
            "3",
            r#"{"packet":{"type":2,"data":["e"]},"requestId":"r1","opts":{"rooms":["room1"],"except":[],"flags":{}}}"#,
        ),
        // Node's rooms may be numbers.
        (
            "3",
            r#"{"packet":{"type":2,"data":["e"]},"opts":{"rooms":[7],"except":[],"flags":{}}}"#,
        ),
        // A leave of sockets: every server looks for them.
        (
            "5",
            r#"{"opts":{"rooms":["room1"],"except":[]},"rooms":["r2"]}"#,
        ),
        ("9", r#"{"packet":["ev"]}"#),
        ("3", "{not json"),
        ("3", "not base64!"),
        ("x", "{}"),
    ] {
        assert_eq!(
            entry_route(&entry(kind, Some("/"), data)),
            Route::Everyone,
            "{kind} {data}"
        );
    }
    assert_eq!(
        entry_route(&entry("3", None, node)),
        Route::Everyone,
        "no nsp"
    );
    assert_eq!(entry_route(&[]), Route::Everyone);
}

#[test]
fn the_route_of_a_binary_entry_as_node_writes_it() {
    // @msgpack/msgpack of {packet: {type: 5, data: ["ev", <01 02 03>], nsp:
    // "/chat"}, opts: {rooms: ["r1", "r2"], except: [], flags: {}}}, base64,
    // as Node's streams adapter writes a binary broadcast.
    let to_rooms = "gqZwYWNrZXSDpHR5cGUFpGRhdGGSomV2xAMBAgOjbnNwpS9jaGF0pG9wdHODpXJvb21zkqJyMaJyMqZleGNlcHSQpWZsYWdzgA==";
    assert_eq!(
        entry_route(&entry("3", Some("/chat"), to_rooms)),
        rooms("/chat", &["r1", "r2"])
    );
    // The same with requestId "abc" and rooms ["r1"]: acks, every server.
    let with_acks = "g6ZwYWNrZXSDpHR5cGUFpGRhdGGSomV2xAMBAgOjbnNwpS9jaGF0qXJlcXVlc3RJZKNhYmOkb3B0c4Olcm9vbXORonIxpmV4Y2VwdJClZmxhZ3OA";
    assert_eq!(
        entry_route(&entry("3", Some("/chat"), with_acks)),
        Route::Everyone
    );
    // Rooms [] except ["x"]: every socket.
    let to_all = "gqZwYWNrZXSDpHR5cGUFpGRhdGGSomV2xAMBAgOjbnNwpS9jaGF0pG9wdHODpXJvb21zkKZleGNlcHSRoXilZmxhZ3OA";
    assert_eq!(
        entry_route(&entry("3", Some("/chat"), to_all)),
        Route::Everyone
    );
    // And what rsio writes for a binary room broadcast.
    let p = packet(
        "451-[\"ev\",{\"_placeholder\":true,\"num\":0}]",
        &[&[1, 2, 3]],
    );
    let opts = BroadcastOptions {
        rooms: vec!["r".into()],
        ..Default::default()
    };
    let data = broadcast_entry_data(&event_parts(&p).unwrap(), &opts);
    assert!(!data.starts_with('{'));
    assert_eq!(
        entry_route(&entry("3", Some("/"), &data)),
        rooms("/", &["r"])
    );
}

#[test]
fn a_join_of_sockets_is_routed_as_a_join_of_its_rooms() {
    // What Node writes for io.in("room1").socketsJoin(["r2", "r3"]).
    let node = r#"{"opts":{"rooms":["room1"],"except":[]},"rooms":["r2","r3"]}"#;
    assert_eq!(
        entry_route(&entry("4", Some("/chat"), node)),
        Route::Join {
            nsp: "/chat".into(),
            rooms: vec!["r2".into(), "r3".into()],
        }
    );
    assert_eq!(
        entry_route(&entry("4", None, node)),
        Route::Everyone,
        "no nsp"
    );
    assert_eq!(entry_route(&entry("4", Some("/"), "{bad")), Route::Everyone);
}
