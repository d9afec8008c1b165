//! Engine.IO v3 (Socket.IO v2 clients) on a server started with `--allow-eio3`,
//! as Node's `allowEIO3`: the length-prefixed handshake, the client-driven
//! heartbeat, text and binary polling payloads, and binary WebSocket frames
//! with their type byte. Conformance timings: pingInterval 300, pingTimeout 200.

mod common;

use std::time::{Duration, Instant};

use common::*;

const V3: &[&str] = &["--allow-eio3"];

fn v3_path(query: &str) -> String {
    eio_raw_path(&format!("EIO=3&{query}"))
}

fn v3_polling(sid: &str) -> String {
    v3_path(&format!("transport=polling&sid={sid}"))
}

/// A v3 polling session; `b64` asks for base64 instead of binary payloads.
async fn v3_handshake(srv: &Server, b64: bool) -> String {
    let query = if b64 {
        "transport=polling&b64=1"
    } else {
        "transport=polling"
    };
    let res = srv.get(&v3_path(query)).await;
    assert_eq!(res.status, 200, "v3 handshake: {}", res.text());
    let text = res.text();
    let (len, packet) = text.split_once(':').expect("a length-prefixed payload");
    assert_eq!(len.parse::<usize>().unwrap(), packet.encode_utf16().count());
    parse_open(packet)["sid"].as_str().unwrap().to_owned()
}

async fn v3_push(srv: &Server, sid: &str, body: &[u8]) -> Response {
    srv.post(&v3_polling(sid), body).await
}

#[tokio::test]
async fn v3_is_refused_without_allow_eio3() {
    let Some(srv) = Server::with_flags("v3_is_refused_without_allow_eio3", &[]).await else {
        return;
    };
    let res = srv.get(&v3_path("transport=polling")).await;
    assert_eio_error(&res, 400, 5, "Unsupported protocol version");
}

#[tokio::test]
async fn v3_handshake_over_polling_and_websocket() {
    let Some(srv) = Server::with_flags("v3_handshake", V3).await else {
        return;
    };
    let res = srv.get(&v3_path("transport=polling")).await;
    let text = res.text();
    let (len, packet) = text.split_once(':').unwrap();
    assert_eq!(len, packet.len().to_string(), "{text}");
    let open = parse_open(packet);
    assert_eq!(open["upgrades"], serde_json::json!(["websocket"]));
    assert_eq!(open["pingInterval"], PING_INTERVAL);
    // As Node with allowEIO3: any EIO but 4, none included, is v3.
    let res = srv.get(&eio_raw_path("transport=polling")).await;
    assert!(res.text().split_once(':').is_some(), "{}", res.text());
    let mut ws = srv.ws("EIO=3&transport=websocket").await;
    let open = ws.recv_open().await;
    assert_eq!(open["upgrades"], serde_json::json!([]));
}

#[tokio::test]
async fn v3_client_pings_the_server_answers_and_never_pings() {
    let Some(srv) = Server::with_flags("v3_heartbeat", V3).await else {
        return;
    };
    let sid = v3_handshake(&srv, true).await;
    let start = Instant::now();
    // Well past pingInterval + pingTimeout: only the client's pings keep it alive,
    // and no poll brings a server ping.
    let mut pings = 0;
    while start.elapsed() < Duration::from_millis(3 * PING_INTERVAL + PING_TIMEOUT) {
        let res = v3_push(&srv, &sid, b"1:2").await;
        assert_eq!(res.status, 200, "ping {pings}: {}", res.text());
        let res = srv.get(&v3_polling(&sid)).await;
        assert_eq!(
            res.text(),
            "1:3",
            "ping {pings}: the pong, and nothing else"
        );
        pings += 1;
        sleep_ms(PING_INTERVAL / 2).await;
    }
    assert!(pings >= 3);
}

#[tokio::test]
async fn v3_session_closes_without_a_client_ping() {
    let Some(srv) = Server::with_flags("v3_ping_timeout", V3).await else {
        return;
    };
    let sid = v3_handshake(&srv, true).await;
    sleep_ms(PING_INTERVAL + PING_TIMEOUT + 100).await;
    let res = v3_push(&srv, &sid, b"1:2").await;
    assert_eq!(res.status, 400, "{}", res.text());
    // A pong from a v3 client is the wrong direction: the session closes.
    let sid = v3_handshake(&srv, true).await;
    assert_eq!(v3_push(&srv, &sid, b"1:3").await.status, 200);
    let res = srv.get(&v3_polling(&sid)).await;
    assert_eq!(res.status, 400, "{}", res.text());
}

#[tokio::test]
async fn v3_polling_payloads_text_base64_and_binary() {
    let Some(srv) = Server::with_flags("v3_polling_payloads", V3).await else {
        return;
    };
    // UTF-16 lengths, both ways.
    let sid = v3_handshake(&srv, true).await;
    let body = "2:4€3:4😀10:b4AQIDBA==";
    assert_eq!(v3_push(&srv, &sid, body.as_bytes()).await.text(), "ok");
    let res = srv.get(&v3_polling(&sid)).await;
    assert_eq!(res.text(), body);
    assert!(res
        .header("content-type")
        .unwrap()
        .starts_with("text/plain"));

    // A client that supports binary gets the binary payload format...
    let sid = v3_handshake(&srv, false).await;
    assert_eq!(
        v3_push(&srv, &sid, b"6:4hello10:b4AQIDBA==").await.text(),
        "ok"
    );
    let res = srv.get(&v3_polling(&sid)).await;
    let binary: &[u8] = &[
        0, 6, 255, b'4', b'h', b'e', b'l', b'l', b'o', 1, 5, 255, 4, 1, 2, 3, 4,
    ];
    assert_eq!(res.body, binary);
    assert_eq!(res.header("content-type"), Some("application/octet-stream"));
    // ...and may send it.
    let res = srv
        .request(
            "POST",
            &v3_polling(&sid),
            &[("Content-Type", "application/octet-stream")],
            Some(binary),
        )
        .await;
    assert_eq!(res.text(), "ok");
    assert_eq!(srv.get(&v3_polling(&sid)).await.body, binary);

    // A malformed length closes the session.
    let res = v3_push(&srv, &sid, b"7:4hello").await;
    assert_eq!(res.status, 400);
    assert_eq!(srv.get(&v3_polling(&sid)).await.status, 400);
}

#[tokio::test]
async fn v3_websocket_binary_frames_carry_the_type_byte() {
    let Some(srv) = Server::with_flags("v3_websocket_binary", V3).await else {
        return;
    };
    let mut ws = srv.ws("EIO=3&transport=websocket").await;
    ws.recv_open().await;
    ws.send_binary(&[4, 1, 2, 3]).await;
    assert_eq!(ws.recv_any().await, Some(Frame::Binary(vec![4, 1, 2, 3])));
    ws.send_text("b4AQI=").await;
    assert_eq!(ws.recv_any().await, Some(Frame::Binary(vec![4, 1, 2])));
    ws.send_text("2").await;
    assert_eq!(ws.recv_text().await, "3");
    // Without the type byte it is no packet: the session closes.
    ws.send_binary(&[1, 2, 3]).await;
    assert!(ws.expect_closed_silently().await.is_empty());

    // `b64=1`: binary messages come as base64 text.
    let mut ws = srv.ws("EIO=3&transport=websocket&b64=1").await;
    ws.recv_open().await;
    ws.send_binary(&[4, 1, 2]).await;
    assert_eq!(ws.recv_text().await, "b4AQI=");
}

#[tokio::test]
async fn v3_jsonp_polling() {
    let Some(srv) = Server::with_flags("v3_jsonp_polling", V3).await else {
        return;
    };
    let res = srv.get(&v3_path("transport=polling&j=2&b64=1")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let text = res.text();
    let inner = text
        .strip_prefix("___eio[2](")
        .and_then(|t| t.strip_suffix(");"))
        .unwrap_or_else(|| panic!("not a JSONP script: {text}"));
    let payload: String = serde_json::from_str(inner).unwrap();
    let (_, open) = payload.split_once(':').unwrap();
    let sid = parse_open(open)["sid"].as_str().unwrap().to_owned();
    let path = v3_path(&format!("transport=polling&sid={sid}&j=2"));
    let form = [("Content-Type", "application/x-www-form-urlencoded")];
    // `\n` in the field is a newline: the message is "a\nb".
    let res = srv
        .request("POST", &path, &form, Some(b"d=4%3A4a%5Cnb1:2"))
        .await;
    assert_eq!(res.text(), "ok");
    assert_eq!(srv.get(&path).await.text(), r#"___eio[2]("4:4a\nb1:3");"#);
    // A `j` without a callback number is refused.
    let res = srv.get(&v3_path("transport=polling&j=x")).await;
    assert_eq!(res.status, 400);
}

/// The packets of a v3 text payload (lengths in UTF-16 units).
fn v3_packets(body: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some((len, tail)) = rest.split_once(':') {
        let units: usize = len
            .parse()
            .unwrap_or_else(|_| panic!("bad length in {body}"));
        let mut taken = 0;
        let end = tail
            .char_indices()
            .find(|(_, c)| {
                let done = taken >= units;
                taken += c.len_utf16();
                done
            })
            .map_or(tail.len(), |(i, _)| i);
        out.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// Socket.IO protocol v4 on the wire, as a v2 client sees it from the
/// conformance server's `/socket.io/` (its `/` and `/custom` emit `auth`).
#[tokio::test]
async fn socket_io_v2_client_wire_format() {
    let Some(srv) = Server::with_flags("socket_io_v2_client_wire_format", V3).await else {
        return;
    };
    let res = srv.get("/socket.io/?EIO=3&transport=polling&b64=1").await;
    let open = v3_packets(&res.text());
    let sid = parse_open(&open[0])["sid"].as_str().unwrap().to_owned();
    let path = format!("/socket.io/?EIO=3&transport=polling&b64=1&sid={sid}");
    // `/` is joined without a CONNECT; the reply has no payload.
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(v3_packets(&srv.get(&path).await.text()));
    }
    assert_eq!(got, ["40", r#"42["auth",{}]"#]);
    // Another namespace's auth is its CONNECT's query.
    let res = srv.post(&path, b"26:40/custom?token=a%20b&x=1,").await;
    assert_eq!(res.text(), "ok");
    let mut got = Vec::new();
    while got.len() < 2 {
        got.extend(v3_packets(&srv.get(&path).await.text()));
    }
    assert_eq!(
        got,
        [
            "40/custom,",
            r#"42/custom,["auth",{"token":"a b","x":"1"}]"#
        ]
    );
}
