//! Hostile Socket.IO packets over a raw Engine.IO WebSocket on `/socket.io/`: each is
//! answered by a closed connection ("parse error") or the exact packet Node sends, and the
//! server keeps serving fresh clients afterwards.
//!
//! Packets are sent as Engine.IO messages (`4` + Socket.IO packet); attachments as binary
//! frames.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::net::TcpStream;

/// Raw Engine.IO WebSocket on `/socket.io/`, open packet read.
async fn sio_open(srv: &Server) -> Ws {
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", srv.addr);
    let tcp = within("TCP connect", TcpStream::connect(srv.addr))
        .await
        .expect("TCP connect");
    tcp.set_nodelay(true).unwrap();
    let (inner, _) = within(
        "WebSocket handshake on /socket.io/",
        tokio_tungstenite::client_async(url, tcp),
    )
    .await
    .expect("WebSocket handshake on /socket.io/");
    let mut ws = Ws { inner };
    ws.recv_open().await;
    ws
}

/// Checks a CONNECT reply `40{"sid":…}` (`pid` too when recovery is on).
fn assert_connect_reply(text: &str, prefix: &str) {
    let json = text
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("expected a CONNECT reply {prefix}{{…}}, got {text:?}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("CONNECT payload is JSON");
    let obj = v.as_object().expect("CONNECT payload is an object");
    assert!(obj["sid"].is_string(), "no sid in {text}");
    assert!(
        obj.keys().all(|k| k == "sid" || k == "pid"),
        "CONNECT keys: {text}"
    );
}

/// A socket connected to "/" (the conformance server then emits `auth`).
async fn sio_connected(srv: &Server) -> Ws {
    let mut ws = sio_open(srv).await;
    ws.send_text("40").await;
    assert_connect_reply(&ws.recv_text_answering_pings().await, "40");
    assert_eq!(ws.recv_text_answering_pings().await, r#"42["auth",{}]"#);
    ws
}

/// `message-with-ack` with id `id` comes back as the ack with the same arguments.
async fn ack_round_trip(ws: &mut Ws, id: u32) {
    ws.send_text(&format!(r#"42{id}["message-with-ack",{{"n":{id}}},"é"]"#))
        .await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        format!(r#"43{id}[{{"n":{id}}},"é"]"#)
    );
}

/// A fresh client connects to "/" and gets an ack back.
async fn assert_still_serving(srv: &Server) {
    let mut ws = sio_connected(srv).await;
    ack_round_trip(&mut ws, 7).await;
}

/// Waits (at most `limit`) until the server closes the connection; heartbeat pings are
/// answered, any other packet before the close is a failure.
async fn expect_closed_within(ws: &mut Ws, limit: Duration, after: &str) {
    within_for(limit, &format!("connection closed after {after}"), async {
        loop {
            match ws.recv_any().await {
                None | Some(Frame::Close(_)) => return,
                Some(Frame::Text(t)) if t == "2" => ws.send_text_lossy("3").await,
                Some(other) => panic!("after {after}: got {other:?} instead of a close"),
            }
        }
    })
    .await
}

async fn expect_parse_error_close(ws: &mut Ws, after: &str) {
    expect_closed_within(ws, Duration::from_secs(2), after).await
}

/// Each of `packets` (Engine.IO message payloads) on a fresh socket connected to "/"
/// (or only opened, when `connect` is false) closes the connection.
async fn assert_each_closes(srv: &Server, connect: bool, packets: &[&str]) {
    for packet in packets {
        let mut ws = if connect {
            sio_connected(srv).await
        } else {
            sio_open(srv).await
        };
        ws.send_text(&format!("4{packet}")).await;
        expect_parse_error_close(&mut ws, packet).await;
    }
    assert_still_serving(srv).await;
}

// ---------------------------------------------------------------------------------------------
// 1. malformed packets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn unknown_packet_types_close_the_connection() {
    let srv = Server::start().await;
    assert_each_closes(&srv, true, &["", "7", "7[]", "9", "x", "-1", " 2[\"a\"]"]).await;
}

#[tokio::test]
async fn event_with_an_invalid_payload_closes_the_connection() {
    // CVE-2023-32695: `[{"toString":…}]` as event name
    let srv = Server::start().await;
    assert_each_closes(
        &srv,
        true,
        &[
            "2",
            "2{}",
            "2\"x\"",
            "2[]",
            "2[{\"toString\":\"x\"}]",
            "2[null]",
            "2[true,1]",
            "2[[\"message\"]]",
            "2[\"message\"",
            "2[\"message\"]xyz",
            "2[\"message\"][]",
        ],
    )
    .await;
}

#[tokio::test]
async fn numeric_event_name_is_accepted_like_node() {
    // socket.io-parser accepts a number as event name (`typeof payload[0] === "number"`);
    // nothing listens to it, and the connection goes on.
    let srv = Server::start().await;
    let mut ws = sio_connected(&srv).await;
    ws.send_text("42[1]").await;
    ws.send_text("42[2,\"x\"]").await;
    ack_round_trip(&mut ws, 1).await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn bad_namespace_or_ack_id_closes_the_connection() {
    let srv = Server::start().await;
    assert_each_closes(
        &srv,
        true,
        &[
            // no leading slash: "nsp,…" is read as the JSON payload
            "2nsp,[\"message\"]",
            "2abc[\"message\"]",
            "212a[\"message\"]",
            // does not fit in 64 bits (Node reads it as 1e22; rsio refuses it)
            "299999999999999999999999[\"message\"]",
            "2-1[\"message\"]",
        ],
    )
    .await;
}

#[tokio::test]
async fn ack_without_id_closes_the_connection() {
    // Node decodes it and drops it ("bad ack undefined"); rsio treats it as a protocol error
    let srv = Server::start().await;
    assert_each_closes(&srv, true, &["3[\"a\"]", "3", "3{}", "31{}", "31\"x\""]).await;
}

#[tokio::test]
async fn connect_with_a_non_object_payload_closes_the_connection() {
    let srv = Server::start().await;
    assert_each_closes(
        &srv,
        false,
        &[
            "0\"x\"",
            "0[1]",
            "0true",
            "01[]",
            "0null",
            "0{",
            "0/custom,[]",
        ],
    )
    .await;
}

#[tokio::test]
async fn client_sent_disconnect_with_payload_or_connect_error_closes_the_connection() {
    let srv = Server::start().await;
    assert_each_closes(
        &srv,
        true,
        &["1{}", "1[]", "4{\"message\":\"x\"}", "4\"x\""],
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 2. reserved event names
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn reserved_event_names_close_the_connection() {
    let srv = Server::start().await;
    let packets = [
        "connect",
        "disconnect",
        "connect_error",
        "disconnecting",
        "newListener",
        "removeListener",
    ]
    .map(|name| format!("2[\"{name}\",\"x\"]"));
    let packets: Vec<&str> = packets.iter().map(String::as_str).collect();
    assert_each_closes(&srv, true, &packets).await;
    // with an ack id, and in a binary event, too
    assert_each_closes(
        &srv,
        true,
        &[
            "25[\"disconnect\"]",
            "51-[\"connect\",{\"_placeholder\":true,\"num\":0}]",
        ],
    )
    .await;
}

#[tokio::test]
async fn error_event_from_the_client_is_harmless() {
    // CVE-2024-38355: "error" is not reserved for the server; it must not crash it.
    let srv = Server::start().await;
    let mut ws = sio_connected(&srv).await;
    ws.send_text("42[\"error\"]").await;
    ws.send_text("42[\"error\",{\"message\":\"boom\"}]").await;
    ws.send_text("421[\"error\",\"x\"]").await;
    ack_round_trip(&mut ws, 2).await;
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 3. binary attachments
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_attachments_block_nothing_else() {
    let srv = Server::start().await;
    let mut stuck = sio_connected(&srv).await;
    stuck
        .send_text(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        .await;
    // the stuck connection answers pings until `answer_until`, then stops
    let answer_until = Instant::now() + Duration::from_millis(1500);
    let stuck = tokio::spawn(async move {
        loop {
            match stuck.recv_any().await {
                Some(Frame::Text(t)) if t == "2" => {
                    if Instant::now() < answer_until {
                        stuck.send_text_lossy("3").await;
                    }
                }
                None | Some(Frame::Close(_)) => return Instant::now(),
                Some(other) => panic!("stuck connection got {other:?}"),
            }
        }
    });
    sleep_ms(1000).await;
    assert!(
        !stuck.is_finished(),
        "the stuck connection was closed early"
    );
    assert_still_serving(&srv).await;
    // once its pings go unanswered, the heartbeat ends it
    let closed_at = within("stuck connection closed", stuck).await.unwrap();
    let limit = Duration::from_millis(PING_INTERVAL + PING_TIMEOUT + 700);
    assert!(
        closed_at >= answer_until && closed_at < answer_until + limit,
        "closed {:?} after it stopped answering pings (limit {limit:?})",
        closed_at.checked_duration_since(answer_until)
    );
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn attachment_count_over_the_bound_closes_the_connection() {
    let srv = Server::start().await;
    assert_each_closes(
        &srv,
        true,
        &[
            r#"511-["message",{"_placeholder":true,"num":0}]"#,
            r#"611-1[{"_placeholder":true,"num":0}]"#,
            r#"5-["message"]"#,
            r#"5x-["message"]"#,
            r#"51["message"]"#,
            r#"5-1-["message"]"#,
        ],
    )
    .await;
}

#[tokio::test]
async fn huge_attachment_count_closes_the_connection_at_once() {
    // CVE-2026-33151: the count must be checked before anything is allocated for it
    let srv = Server::start().await;
    for count in [
        "1000000",
        "18446744073709551615",
        "99999999999999999999999999",
    ] {
        let mut ws = sio_connected(&srv).await;
        let started = Instant::now();
        ws.send_text(&format!(
            r#"45{count}-["message",{{"_placeholder":true,"num":0}}]"#
        ))
        .await;
        expect_closed_within(&mut ws, Duration::from_secs(1), count).await;
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn illegal_placeholders_close_the_connection() {
    // CVE-2022-2421
    let srv = Server::start().await;
    for num in [
        "1",
        "-1",
        "\"0\"",
        "0.5",
        "null",
        "\"__proto__\"",
        "{}",
        "1e400",
    ] {
        let mut ws = sio_connected(&srv).await;
        ws.send_text(&format!(
            r#"451-["message",{{"_placeholder":true,"num":{num}}}]"#
        ))
        .await;
        ws.send_binary(&[1, 2, 3]).await;
        expect_parse_error_close(&mut ws, &format!("placeholder num {num}")).await;
    }
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn duplicate_placeholders_are_accepted_like_node() {
    // socket.io-parser only checks that each `num` is in range
    let srv = Server::start().await;
    let mut ws = sio_connected(&srv).await;
    ws.send_text(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]"#)
        .await;
    ws.send_binary(&[1]).await;
    ws.send_binary(&[2]).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(ws.recv_any().await, Some(Frame::Binary(vec![1])));
    assert_eq!(ws.recv_any().await, Some(Frame::Binary(vec![2])));
    ack_round_trip(&mut ws, 3).await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn unexpected_binary_or_text_while_reconstructing_closes_the_connection() {
    let srv = Server::start().await;
    // a binary frame when no attachment is expected
    let mut ws = sio_connected(&srv).await;
    ws.send_binary(&[1, 2, 3]).await;
    expect_parse_error_close(&mut ws, "an unexpected binary frame").await;
    // one attachment too many
    let mut ws = sio_connected(&srv).await;
    ws.send_text(r#"451-["message",{"_placeholder":true,"num":0}]"#)
        .await;
    ws.send_binary(&[1]).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"451-["message-back",{"_placeholder":true,"num":0}]"#
    );
    assert_eq!(ws.recv_any().await, Some(Frame::Binary(vec![1])));
    ws.send_binary(&[2]).await;
    expect_parse_error_close(&mut ws, "an attachment too many").await;
    // a text packet where an attachment is expected
    let mut ws = sio_connected(&srv).await;
    ws.send_text(r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#)
        .await;
    ws.send_binary(&[1]).await;
    ws.send_text(r#"42["message","x"]"#).await;
    expect_parse_error_close(&mut ws, "text instead of an attachment").await;
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 4. / 5. JSON
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn deeply_nested_json_closes_the_connection() {
    let srv = Server::start().await;
    let mut ws = sio_connected(&srv).await;
    let n = 100_000;
    let packet = format!(r#"42["message",{}{}]"#, "[".repeat(n), "]".repeat(n));
    ws.send_text(&packet).await;
    expect_parse_error_close(&mut ws, "100 000 nested arrays").await;
    let mut ws = sio_connected(&srv).await;
    let packet = format!(
        r#"42["message",{}1{}]"#,
        r#"{"a":"#.repeat(n),
        "}".repeat(n)
    );
    ws.send_text(&packet).await;
    expect_parse_error_close(&mut ws, "100 000 nested objects").await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn nesting_of_100_is_echoed() {
    let srv = Server::start().await;
    let mut ws = sio_connected(&srv).await;
    let nested = format!("{}\"deep\"{}", "[".repeat(100), "]".repeat(100));
    ws.send_text(&format!(r#"42["message",{nested}]"#)).await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        format!(r#"42["message-back",{nested}]"#)
    );
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn lone_surrogate_escape_is_echoed_or_closes() {
    let srv = Server::start().await;
    let mut ws = sio_connected(&srv).await;
    ws.send_text(r#"42["message","\ud800","\udfff\ud800x"]"#)
        .await;
    match within("answer to a lone surrogate", async {
        loop {
            match ws.recv_any().await {
                Some(Frame::Text(t)) if t == "2" => ws.send_text_lossy("3").await,
                other => return other,
            }
        }
    })
    .await
    {
        // echoed: the connection goes on
        Some(Frame::Text(t)) => {
            assert_eq!(t, r#"42["message-back","\ud800","\udfff\ud800x"]"#);
            ack_round_trip(&mut ws, 4).await;
        }
        None | Some(Frame::Close(_)) => {}
        Some(other) => panic!("unexpected answer {other:?}"),
    }
    assert_still_serving(&srv).await;
}

// ---------------------------------------------------------------------------------------------
// 6. – 9. namespaces and acks in the wrong state
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn second_connect_to_the_same_namespace_closes_the_connection() {
    // Node's Client#ondecoded: a CONNECT for a namespace that has a socket is an
    // "invalid state": the connection is closed.
    let srv = Server::start().await;
    let mut ws = sio_connected(&srv).await;
    ws.send_text("40").await;
    expect_closed_within(&mut ws, Duration::from_secs(2), "a second CONNECT to /").await;
    // the same with /custom
    let mut ws = sio_connected(&srv).await;
    ws.send_text("40/custom,").await;
    assert_connect_reply(&ws.recv_text_answering_pings().await, "40/custom,");
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"42/custom,["auth",{}]"#
    );
    ws.send_text("40/custom,{\"token\":1}").await;
    expect_closed_within(
        &mut ws,
        Duration::from_secs(2),
        "a second CONNECT to /custom",
    )
    .await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn ack_for_an_id_never_issued_is_ignored() {
    let srv = Server::start().await;
    let mut ws = sio_connected(&srv).await;
    ws.send_text(r#"43999["x"]"#).await;
    ws.send_text(r#"430[]"#).await;
    ws.send_text(r#"4318446744073709551615["x"]"#).await;
    ws.send_text(r#"461-999[{"_placeholder":true,"num":0}]"#)
        .await;
    ws.send_binary(&[1, 2, 3]).await;
    ack_round_trip(&mut ws, 5).await;
    assert_still_serving(&srv).await;
}

#[tokio::test]
async fn event_for_a_namespace_not_joined_closes_the_connection() {
    // Node's Client#ondecoded: no socket for the namespace and not a CONNECT is an
    // "invalid state": the connection is closed.
    let srv = Server::start().await;
    assert_each_closes(
        &srv,
        true,
        &[
            r#"2/custom,["message","x"]"#,
            r#"2/nope,["message","x"]"#,
            r#"3/custom,1["x"]"#,
            "1/custom,",
        ],
    )
    .await;
}

#[tokio::test]
async fn connect_to_an_unknown_namespace_is_connect_error() {
    let srv = Server::start().await;
    let mut ws = sio_connected(&srv).await;
    ws.send_text("40/nope,").await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"44/nope,{"message":"Invalid namespace"}"#
    );
    ws.send_text("40/nope/../custom,{}").await;
    assert_eq!(
        ws.recv_text_answering_pings().await,
        r#"44/nope/../custom,{"message":"Invalid namespace"}"#
    );
    // "/" goes on
    ack_round_trip(&mut ws, 6).await;
    assert_still_serving(&srv).await;
}
