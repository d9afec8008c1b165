//! Engine options given as flags to `examples/conformance`: allowUpgrades, transports, cookie,
//! CORS, allowRequest, httpCompression, initialPacket, timings and maxHttpBufferSize.
//! Tests that need flags are skipped against `RSIO_TEST_URL`; the ones that check the
//! defaults also run against the Node reference.

mod common;

use std::io::Read;

use common::*;
use flate2::read::{GzDecoder, ZlibDecoder};

const HANDSHAKE: &str = "/engine.io/?EIO=4&transport=polling";

macro_rules! server {
    ($name:literal, $($flag:expr),* $(,)?) => {
        match Server::with_flags($name, &[$($flag),*]).await {
            Some(s) => s,
            None => return,
        }
    };
}

#[tokio::test]
async fn allow_upgrades_false() {
    let srv = server!("allow_upgrades_false", "--allow-upgrades", "false");
    let (sid, open) = srv.handshake().await;
    assert_eq!(open["upgrades"], serde_json::json!([]));
    // a probe for the polling session is refused: no `3probe`, the websocket is closed
    match srv
        .try_ws(&format!("EIO=4&transport=websocket&sid={sid}"))
        .await
    {
        Err(_) => {}
        Ok(mut ws) => {
            ws.send_text_lossy("2probe").await;
            let seen = ws.expect_closed_silently().await;
            assert!(
                !seen.contains(&Frame::Text("3probe".into())),
                "probe answered: {seen:?}"
            );
        }
    }
    // direct WebSocket sessions still work
    let (mut ws, open) = srv.ws_session().await;
    assert_eq!(open["upgrades"], serde_json::json!([]));
    ws.send_text("4x").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4x");
}

#[tokio::test]
async fn transports_polling_only() {
    let srv = server!("transports_polling_only", "--transports", "polling");
    let (sid, open) = srv.handshake().await;
    assert_eq!(open["upgrades"], serde_json::json!([]));
    srv.push_ok(&sid, "4p").await;
    assert_eq!(srv.poll_data(&sid).await, "4p");
    let before = srv.stats().await;
    srv.assert_ws_refused("EIO=4&transport=websocket").await;
    srv.assert_errors_grew(&before, 0, 1).await;
}

#[tokio::test]
async fn transports_websocket_only() {
    let srv = server!("transports_websocket_only", "--transports", "websocket");
    let before = srv.stats().await;
    let res = srv.get(HANDSHAKE).await;
    assert_eio_error(&res, 400, 0, "Transport unknown");
    srv.assert_errors_grew(&before, 0, 1).await;
    let (mut ws, open) = srv.ws_session().await;
    assert_eq!(open["upgrades"], serde_json::json!([]));
    ws.send_text("4w").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4w");
}

#[tokio::test]
async fn no_cookie_by_default() {
    let srv = Server::start().await;
    let res = srv.get(HANDSHAKE).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("set-cookie"), None);
}

#[tokio::test]
async fn cookie_option_sets_io_cookie_on_handshake() {
    let srv = server!("cookie_option_sets_io_cookie_on_handshake", "--cookie");
    let res = srv.get(HANDSHAKE).await;
    assert_eq!(res.status, 200);
    let sid = parse_open(&res.text())["sid"].as_str().unwrap().to_string();
    assert_eq!(
        res.header_all("set-cookie"),
        [format!("io={sid}; Path=/; HttpOnly; SameSite=Lax")]
    );
    // only the handshake response carries it
    srv.push_ok(&sid, "4c").await;
    let res = srv.poll(&sid).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("set-cookie"), None);
}

#[tokio::test]
async fn cors_default_allows_any_origin() {
    let srv = Server::start().await;
    let res = srv
        .request("GET", HANDSHAKE, &[("Origin", "http://x.example")], None)
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
    let res = srv
        .request(
            "OPTIONS",
            HANDSHAKE,
            &[
                ("Origin", "http://x.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            None,
        )
        .await;
    assert_eq!(res.status, 204);
    assert_eq!(res.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn cors_specific_origin_with_credentials() {
    let srv = server!(
        "cors_specific_origin_with_credentials",
        "--cors-origin",
        "http://a.example",
        "--cors-credentials",
    );
    let res = srv
        .request("GET", HANDSHAKE, &[("Origin", "http://a.example")], None)
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("http://a.example")
    );
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));

    // a foreign origin is not allowed (Node's `cors` would echo the configured origin)
    let res = srv
        .request("GET", HANDSHAKE, &[("Origin", "http://b.example")], None)
        .await;
    assert_eq!(res.header("access-control-allow-origin"), None);

    let res = srv
        .request(
            "OPTIONS",
            HANDSHAKE,
            &[
                ("Origin", "http://a.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            None,
        )
        .await;
    assert_eq!(res.status, 204);
    assert_eq!(
        res.header("access-control-allow-origin"),
        Some("http://a.example")
    );
    assert_eq!(res.header("access-control-allow-credentials"), Some("true"));
}

#[tokio::test]
async fn allow_request_refusal_is_403_code_4() {
    let srv = server!(
        "allow_request_refusal_is_403_code_4",
        "--allow-request-header",
        "x-token",
    );
    let before = srv.stats().await;
    let res = srv.get(HANDSHAKE).await;
    assert_eio_error(&res, 403, 4, "missing x-token");
    srv.assert_errors_grew(&before, 4, 1).await;
    srv.assert_ws_refused("EIO=4&transport=websocket").await;
    srv.assert_errors_grew(&before, 4, 2).await;

    let res = srv
        .request("GET", HANDSHAKE, &[("X-Token", "abc")], None)
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
    parse_open(&res.text());
}

/// Session with one echoed message of `len` bytes waiting to be polled.
async fn pending_echo(srv: &Server, len: usize) -> (String, String) {
    let (sid, _) = srv.handshake().await;
    let mut msg = "4".to_string();
    msg.extend((0..len - 1).map(|i| (b'a' + (i % 26) as u8) as char));
    srv.push_ok(&sid, &msg).await;
    (sid, msg)
}

fn decompress(encoding: &str, body: &[u8]) -> String {
    let mut out = String::new();
    match encoding {
        "gzip" => GzDecoder::new(body).read_to_string(&mut out),
        "deflate" => ZlibDecoder::new(body).read_to_string(&mut out),
        other => panic!("unexpected content-encoding {other}"),
    }
    .unwrap_or_else(|e| panic!("decoding {encoding}: {e}"));
    out
}

#[tokio::test]
async fn poll_response_over_threshold_is_compressed() {
    let srv = Server::start().await;
    for encoding in ["gzip", "deflate"] {
        let (sid, msg) = pending_echo(&srv, 2000).await;
        let res = srv
            .request(
                "GET",
                &polling_path(&sid),
                &[("Accept-Encoding", encoding)],
                None,
            )
            .await;
        assert_eq!(res.status, 200);
        assert_eq!(res.header("content-encoding"), Some(encoding));
        assert!(res.body.len() < msg.len(), "{encoding} body is smaller");
        assert_eq!(decompress(encoding, &res.body), msg);
    }
}

#[tokio::test]
async fn poll_response_under_threshold_is_not_compressed() {
    let srv = Server::start().await;
    let (sid, msg) = pending_echo(&srv, 500).await;
    let res = srv
        .request(
            "GET",
            &polling_path(&sid),
            &[("Accept-Encoding", "gzip, deflate")],
            None,
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-encoding"), None);
    assert_eq!(res.text(), msg);
    // and without Accept-Encoding a large response is sent as is
    let (sid, msg) = pending_echo(&srv, 2000).await;
    let res = srv.poll(&sid).await;
    assert_eq!(res.header("content-encoding"), None);
    assert_eq!(res.text(), msg);
}

#[tokio::test]
async fn no_http_compression() {
    let srv = server!("no_http_compression", "--no-http-compression");
    let (sid, msg) = pending_echo(&srv, 5000).await;
    let res = srv
        .request(
            "GET",
            &polling_path(&sid),
            &[("Accept-Encoding", "gzip")],
            None,
        )
        .await;
    assert_eq!(res.header("content-encoding"), None);
    assert_eq!(res.text(), msg);
}

#[tokio::test]
async fn http_compression_threshold_flag() {
    let srv = server!(
        "http_compression_threshold_flag",
        "--http-compression-threshold",
        "10",
    );
    let (sid, msg) = pending_echo(&srv, 100).await;
    let res = srv
        .request(
            "GET",
            &polling_path(&sid),
            &[("Accept-Encoding", "gzip")],
            None,
        )
        .await;
    assert_eq!(res.header("content-encoding"), Some("gzip"));
    assert_eq!(decompress("gzip", &res.body), msg);
}

#[tokio::test]
async fn initial_packet_follows_the_open_packet() {
    let srv = server!(
        "initial_packet_follows_the_open_packet",
        "--initial-packet",
        "hi",
    );
    // polling: Node flushes it with the open packet (`0{…}\x1e4hi`); a server may also
    // leave it for the first GET
    let res = srv.get(HANDSHAKE).await;
    assert_eq!(res.status, 200);
    let body = res.text();
    let mut packets = body.split('\x1e');
    let open = parse_open(packets.next().unwrap());
    match packets.next() {
        Some(p) => {
            assert_eq!(p, "4hi");
            assert_eq!(packets.next(), None);
        }
        None => {
            let sid = open["sid"].as_str().unwrap();
            assert_eq!(srv.poll_data(sid).await, "4hi");
        }
    }
    // websocket: the frame after the open packet
    let (mut ws, _) = srv.ws_session().await;
    assert_eq!(ws.recv_text().await, "4hi");
}

#[tokio::test]
async fn timing_and_size_flags_reach_the_handshake() {
    let srv = server!(
        "timing_and_size_flags_reach_the_handshake",
        "--ping-interval",
        "1500",
        "--ping-timeout",
        "700",
        "--max-http-buffer-size",
        "100",
    );
    let (_, open) = srv.handshake().await;
    assert_eq!(open["pingInterval"], 1500);
    assert_eq!(open["pingTimeout"], 700);
    assert_eq!(open["maxPayload"], 100);
    let (_, open) = srv.ws_session().await;
    assert_eq!(open["maxPayload"], 100);
}

#[tokio::test]
async fn small_max_http_buffer_size() {
    let srv = server!(
        "small_max_http_buffer_size",
        "--max-http-buffer-size",
        "100"
    );
    let (sid, _) = srv.handshake().await;
    let ok = format!("4{}", "a".repeat(99));
    srv.push_ok(&sid, &ok).await;
    assert_eq!(srv.poll_data(&sid).await, ok);
    let res = srv.push(&sid, &format!("4{}", "a".repeat(100))).await;
    assert_eq!(res.status, 413);

    let (mut ws, _) = srv.ws_session().await;
    ws.send_text(&ok).await;
    assert_eq!(ws.recv_text_answering_pings().await, ok);
    ws.send_text_lossy(&format!("4{}", "a".repeat(100))).await;
    assert_eq!(ws.expect_closed().await, Some(1009));
}
