//! Sample messages and proptest strategies shared by the tests.
#![allow(dead_code)]

use bytes::Bytes;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::{BoxedStrategy, Union};
use rsio_ipc::{Broadcast, EventPayload, Frame, Message, Session, SocketInfo, Target};

/// Number of `Message` variants; `samples()` must cover each of them.
pub const VARIANTS: usize = 32;

fn s(x: &str) -> String {
    x.to_string()
}

fn target() -> Target {
    Target {
        rooms: vec![s("room-1"), s("ünïcødé ✓")],
        except: vec![s("sid-abc")],
        volatile: true,
        uncompressed: true,
    }
}

fn payload() -> EventPayload {
    EventPayload {
        json: Bytes::from_static(br#""hello",{"_placeholder":true,"num":0},3"#),
        attachments: vec![Bytes::from_static(&[0, 1, 2, 255]), Bytes::new()],
    }
}

/// One or more examples of every variant, with edge values.
pub fn samples() -> Vec<Message> {
    vec![
        Message::Hello {
            version: rsio_ipc::PROTOCOL_VERSION,
            worker: 3,
            pid: u32::MAX,
        },
        Message::Ready,
        Message::Drain,
        Message::Retire,
        Message::WorkerExited { worker: 0 },
        Message::WorkerJoined { worker: u16::MAX },
        Message::Stats {
            connections: u64::MAX,
        },
        Message::Heartbeat,
        Message::Fence { id: u64::MAX },
        Message::FenceRequest { id: 3 },
        Message::FenceDone { id: 0 },
        Message::Metrics {
            counters: vec![0, 1, u64::MAX],
            gauges: vec![7],
            namespaces: vec![(s("/"), 2), (s("/chat"), 0)],
        },
        Message::RecoveryOn {
            nsp: s("/"),
            max_disconnection_ms: 120_000,
        },
        Message::SessionUpdate(Session {
            nsp: s("/chat"),
            pid: s("pid"),
            id: s("id"),
            rooms: vec![s("a"), s("b")],
            data: r#"{"user":"ü"}"#.as_bytes().to_vec(),
        }),
        Message::RoomInterest {
            nsp: "/chat".into(),
            room: "room 1".into(),
            present: true,
        },
        Message::SessionClosed {
            nsp: s("/"),
            pid: s("pid"),
            recoverable: true,
        },
        Message::RestoreSession {
            from: 2,
            request: 77,
            nsp: s("/"),
            pid: s("pid"),
            offset: s("12"),
        },
        Message::RestoreSessionResponse {
            to: 2,
            request: 77,
            session: Some(Session::default()),
            missed: vec![
                vec![Frame::Text(Bytes::from_static(b"42[\"a\",\"13\"]"))],
                vec![
                    Frame::Text(Bytes::from_static(
                        b"451-[\"b\",{\"_placeholder\":true,\"num\":0},\"14\"]",
                    )),
                    Frame::Binary(Bytes::from_static(&[9, 9])),
                ],
            ],
            horizon: 14,
        },
        Message::Broadcast(Broadcast {
            nsp: s("/"),
            target: target(),
            ack: Some((7, u64::MAX, 1 << 40)),
            offset: Some(42),
            frames: vec![
                Frame::Text(Bytes::from_static(
                    "451-[\"ev\",{\"_placeholder\":true,\"num\":0}]".as_bytes(),
                )),
                Frame::Binary(Bytes::from_static(&[1, 2, 3])),
                Frame::Binary(Bytes::new()),
            ],
        }),
        Message::Broadcast(Broadcast {
            nsp: s(""),
            target: Target::default(),
            ack: None,
            offset: None,
            frames: vec![],
        }),
        Message::Broadcast(Broadcast {
            nsp: s("/chat"),
            target: Target::default(),
            ack: None,
            offset: None,
            frames: vec![Frame::Text(Bytes::from("42[\"é\"]".repeat(5000)))],
        }),
        Message::SocketsJoin {
            nsp: s("/"),
            target: target(),
            rooms: vec![s("a"), s("b")],
        },
        Message::SocketsLeave {
            nsp: s("/admin"),
            target: Target::default(),
            rooms: vec![],
        },
        Message::DisconnectSockets {
            nsp: s("/"),
            target: target(),
            close: true,
        },
        Message::FetchSockets {
            from: 3,
            nsp: s("/"),
            target: target(),
            request: 1,
        },
        Message::ServerSideEmit {
            from: 1,
            nsp: s("/"),
            event: s("ping"),
            payload: payload(),
            request: Some(9),
        },
        Message::ServerSideEmit {
            from: 1,
            nsp: s("/"),
            event: s(""),
            payload: EventPayload::default(),
            request: None,
        },
        Message::FetchSocketsResponse {
            from: 9,
            to: 2,
            request: 5,
            sockets: vec![
                SocketInfo {
                    id: s("sid-1"),
                    handshake: br#"{"headers":{},"query":{}}"#.to_vec(),
                    rooms: vec![s("sid-1"), s("r")],
                    data: b"null".to_vec(),
                },
                SocketInfo::default(),
            ],
        },
        Message::ServerSideEmitResponse {
            from: 9,
            to: 1,
            request: 6,
            payload: payload(),
        },
        Message::BroadcastClientCount {
            from: 9,
            to: 0,
            request: 7,
            count: 0,
        },
        Message::BroadcastAck {
            from: 9,
            to: 4,
            request: 8,
            payload: payload(),
        },
        Message::RedisEntry {
            id: s("1700000000000-3"),
            fields: ["uid", "abc", "nsp", "/", "type", "3", "data", "{\"x\":1}"]
                .iter()
                .map(|f| Bytes::from(f.as_bytes().to_vec()))
                .collect(),
        },
        Message::RedisMessage {
            channel: s("socket.io#/#room#"),
            payload: Bytes::from_static(&[0x93, 0xa1, b'a', 0xc0, 0x80, 0xff, 0x00]),
        },
        Message::RedisMember {
            nsp: s("/chat"),
            uid: s("0123456789abcdef"),
            own_entries: true,
        },
        Message::LinkStuck { lane: 4, epoch: 17 },
    ]
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

fn arb_strings() -> impl Strategy<Value = Vec<String>> {
    vec(any::<String>(), 0..4)
}

fn arb_target() -> impl Strategy<Value = Target> {
    (arb_strings(), arb_strings(), any::<bool>(), any::<bool>()).prop_map(
        |(rooms, except, volatile, uncompressed)| Target {
            rooms,
            except,
            volatile,
            uncompressed,
        },
    )
}

fn arb_payload() -> impl Strategy<Value = EventPayload> {
    (arb_bytes(), vec(arb_bytes(), 0..4))
        .prop_map(|(json, attachments)| EventPayload { json, attachments })
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        any::<String>().prop_map(|t| Frame::Text(Bytes::from(t))),
        arb_bytes().prop_map(Frame::Binary),
    ]
}

fn arb_session() -> impl Strategy<Value = Session> {
    (
        any::<String>(),
        any::<String>(),
        any::<String>(),
        arb_strings(),
        vec(any::<u8>(), 0..16),
    )
        .prop_map(|(nsp, pid, id, rooms, data)| Session {
            nsp,
            pid,
            id,
            rooms,
            data,
        })
}

fn arb_socket() -> impl Strategy<Value = SocketInfo> {
    (
        any::<String>(),
        vec(any::<u8>(), 0..32),
        arb_strings(),
        vec(any::<u8>(), 0..32),
    )
        .prop_map(|(id, handshake, rooms, data)| SocketInfo {
            id,
            handshake,
            rooms,
            data,
        })
}

/// Any message, with arbitrary strings, bytes and vectors.
pub fn arb_message() -> impl Strategy<Value = Message> {
    let arms: Vec<BoxedStrategy<Message>> = vec![
        (any::<u16>(), any::<u16>(), any::<u32>())
            .prop_map(|(version, worker, pid)| Message::Hello {
                version,
                worker,
                pid,
            })
            .boxed(),
        Just(Message::Ready).boxed(),
        Just(Message::Drain).boxed(),
        Just(Message::Retire).boxed(),
        any::<u16>()
            .prop_map(|worker| Message::WorkerExited { worker })
            .boxed(),
        any::<u16>()
            .prop_map(|worker| Message::WorkerJoined { worker })
            .boxed(),
        any::<u64>()
            .prop_map(|connections| Message::Stats { connections })
            .boxed(),
        Just(Message::Heartbeat).boxed(),
        any::<u64>().prop_map(|id| Message::Fence { id }).boxed(),
        any::<u64>()
            .prop_map(|id| Message::FenceRequest { id })
            .boxed(),
        any::<u64>()
            .prop_map(|id| Message::FenceDone { id })
            .boxed(),
        (
            proptest::collection::vec(any::<u64>(), 0..8),
            proptest::collection::vec(any::<u64>(), 0..8),
            proptest::collection::vec((any::<String>(), any::<u64>()), 0..3),
        )
            .prop_map(|(counters, gauges, namespaces)| Message::Metrics {
                counters,
                gauges,
                namespaces,
            })
            .boxed(),
        (any::<String>(), any::<u64>())
            .prop_map(|(nsp, max_disconnection_ms)| Message::RecoveryOn {
                nsp,
                max_disconnection_ms,
            })
            .boxed(),
        arb_session().prop_map(Message::SessionUpdate).boxed(),
        (any::<String>(), any::<String>(), any::<bool>())
            .prop_map(|(nsp, room, present)| Message::RoomInterest { nsp, room, present })
            .boxed(),
        (any::<String>(), any::<String>(), any::<bool>())
            .prop_map(|(nsp, pid, recoverable)| Message::SessionClosed {
                nsp,
                pid,
                recoverable,
            })
            .boxed(),
        (
            any::<u16>(),
            any::<u64>(),
            any::<String>(),
            any::<String>(),
            any::<String>(),
        )
            .prop_map(
                |(from, request, nsp, pid, offset)| Message::RestoreSession {
                    from,
                    request,
                    nsp,
                    pid,
                    offset,
                },
            )
            .boxed(),
        (
            any::<u16>(),
            any::<u64>(),
            proptest::option::of(arb_session()),
            vec(vec(arb_frame(), 0..3), 0..3),
            any::<u64>(),
        )
            .prop_map(
                |(to, request, session, missed, horizon)| Message::RestoreSessionResponse {
                    to,
                    request,
                    session,
                    missed,
                    horizon,
                },
            )
            .boxed(),
        (
            any::<String>(),
            arb_target(),
            any::<Option<(u16, u64, u64)>>(),
            any::<Option<u64>>(),
            vec(arb_frame(), 0..5),
        )
            .prop_map(|(nsp, target, ack, offset, frames)| {
                Message::Broadcast(Broadcast {
                    nsp,
                    target,
                    ack,
                    offset,
                    frames,
                })
            })
            .boxed(),
        (any::<String>(), arb_target(), arb_strings())
            .prop_map(|(nsp, target, rooms)| Message::SocketsJoin { nsp, target, rooms })
            .boxed(),
        (any::<String>(), arb_target(), arb_strings())
            .prop_map(|(nsp, target, rooms)| Message::SocketsLeave { nsp, target, rooms })
            .boxed(),
        (any::<String>(), arb_target(), any::<bool>())
            .prop_map(|(nsp, target, close)| Message::DisconnectSockets { nsp, target, close })
            .boxed(),
        (any::<u16>(), any::<String>(), arb_target(), any::<u64>())
            .prop_map(|(from, nsp, target, request)| Message::FetchSockets {
                from,
                nsp,
                target,
                request,
            })
            .boxed(),
        (
            any::<u16>(),
            any::<String>(),
            any::<String>(),
            arb_payload(),
            any::<Option<u64>>(),
        )
            .prop_map(
                |(from, nsp, event, payload, request)| Message::ServerSideEmit {
                    from,
                    nsp,
                    event,
                    payload,
                    request,
                },
            )
            .boxed(),
        (
            any::<u16>(),
            any::<u16>(),
            any::<u64>(),
            vec(arb_socket(), 0..4),
        )
            .prop_map(
                |(from, to, request, sockets)| Message::FetchSocketsResponse {
                    from,
                    to,
                    request,
                    sockets,
                },
            )
            .boxed(),
        (any::<u16>(), any::<u16>(), any::<u64>(), arb_payload())
            .prop_map(
                |(from, to, request, payload)| Message::ServerSideEmitResponse {
                    from,
                    to,
                    request,
                    payload,
                },
            )
            .boxed(),
        (any::<u16>(), any::<u16>(), any::<u64>(), any::<u64>())
            .prop_map(|(from, to, request, count)| Message::BroadcastClientCount {
                from,
                to,
                request,
                count,
            })
            .boxed(),
        (any::<u16>(), any::<u16>(), any::<u64>(), arb_payload())
            .prop_map(|(from, to, request, payload)| Message::BroadcastAck {
                from,
                to,
                request,
                payload,
            })
            .boxed(),
        (".*", proptest::collection::vec(arb_bytes(), 0..8))
            .prop_map(|(id, fields)| Message::RedisEntry { id, fields })
            .boxed(),
        (".*", arb_bytes())
            .prop_map(|(channel, payload)| Message::RedisMessage { channel, payload })
            .boxed(),
        (".*", ".*", any::<bool>())
            .prop_map(|(nsp, uid, own_entries)| Message::RedisMember {
                nsp,
                uid,
                own_entries,
            })
            .boxed(),
        (any::<u32>(), any::<u64>())
            .prop_map(|(lane, epoch)| Message::LinkStuck { lane, epoch })
            .boxed(),
    ];
    assert_eq!(arms.len(), VARIANTS);
    Union::new(arms)
}
