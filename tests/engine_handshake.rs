//! Engine.IO v4 handshake over polling and WebSocket, and the handshake error codes.

mod common;

use std::collections::HashSet;
use std::sync::Arc;

use common::*;
use tokio::io::AsyncWriteExt;

fn assert_conformance_open(open: &serde_json::Value, upgrades: serde_json::Value) {
    assert_eq!(open["upgrades"], upgrades, "upgrades in {open}");
    assert_eq!(
        open["pingInterval"], PING_INTERVAL,
        "pingInterval in {open}"
    );
    assert_eq!(open["pingTimeout"], PING_TIMEOUT, "pingTimeout in {open}");
    assert_eq!(open["maxPayload"], MAX_PAYLOAD, "maxPayload in {open}");
}

#[tokio::test]
async fn polling_handshake_opens_a_session() {
    let srv = Server::start().await;
    let res = srv.get(&eio_path("transport=polling")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    let ct = res.header("content-type").unwrap_or_default();
    assert!(
        ct.to_ascii_lowercase().starts_with("text/plain"),
        "content-type {ct:?}"
    );
    let body = res.text();
    // the open packet alone (no initial packet configured)
    assert!(!body.contains('\x1e'), "only the open packet: {body:?}");
    let open = parse_open(&body);
    assert_conformance_open(&open, serde_json::json!(["websocket"]));
}

#[tokio::test]
async fn polling_handshake_ignores_cache_buster() {
    let srv = Server::start().await;
    let res = srv.get(&eio_path("transport=polling&t=NxYz1a")).await;
    assert_eq!(res.status, 200, "{}", res.text());
    parse_open(&res.text());
}

#[tokio::test]
async fn websocket_handshake_opens_a_session() {
    let srv = Server::start().await;
    let (mut ws, open) = srv.ws_session().await;
    assert_conformance_open(&open, serde_json::json!([]));
    // the session is usable right away
    ws.send_text("4hi").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4hi");
}

#[tokio::test]
async fn a_thousand_handshakes_give_distinct_sids() {
    let srv = Arc::new(Server::start().await);
    let mut sids = HashSet::new();
    // 8 concurrent workers x 125 handshakes
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let srv = srv.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for _ in 0..125 {
                out.push(srv.handshake().await.0);
            }
            out
        }));
    }
    for t in tasks {
        for sid in t.await.expect("worker") {
            assert!(sids.insert(sid.clone()), "duplicate sid {sid}");
        }
    }
    assert_eq!(sids.len(), 1000);
}

#[tokio::test]
async fn polling_handshake_with_bad_eio_is_code_5() {
    let srv = Server::start().await;
    let before = srv.stats().await;
    for target in [
        "/engine.io/?transport=polling",
        "/engine.io/?EIO=abc&transport=polling",
        "/engine.io/?EIO=3&transport=polling",
        "/engine.io/?EIO=5&transport=polling",
    ] {
        let res = srv.get(target).await;
        assert_eio_error(&res, 400, 5, "Unsupported protocol version");
    }
    srv.assert_errors_grew(&before, 5, 4).await;
}

#[tokio::test]
async fn polling_handshake_with_bad_transport_is_code_0() {
    let srv = Server::start().await;
    let before = srv.stats().await;
    for target in [
        "/engine.io/?EIO=4",
        "/engine.io/?EIO=4&transport=abc",
        "/engine.io/?EIO=4&transport=",
    ] {
        let res = srv.get(target).await;
        assert_eio_error(&res, 400, 0, "Transport unknown");
    }
    srv.assert_errors_grew(&before, 0, 3).await;
}

#[tokio::test]
async fn handshake_with_post_or_put_is_code_2() {
    let srv = Server::start().await;
    let before = srv.stats().await;
    for method in ["POST", "PUT"] {
        let res = srv
            .request(method, &eio_path("transport=polling"), &[], Some(b""))
            .await;
        assert_eio_error(&res, 400, 2, "Bad handshake method");
    }
    srv.assert_errors_grew(&before, 2, 2).await;
}

#[tokio::test]
async fn unknown_sid_is_code_1() {
    let srv = Server::start().await;
    let before = srv.stats().await;
    let res = srv.poll("AAAAAAAAAAAAAAAAAAAA").await;
    assert_eio_error(&res, 400, 1, "Session ID unknown");
    let res = srv.push("AAAAAAAAAAAAAAAAAAAA", "4hello").await;
    assert_eio_error(&res, 400, 1, "Session ID unknown");
    srv.assert_errors_grew(&before, 1, 2).await;
    // a WebSocket with an unknown sid is refused too
    srv.assert_ws_refused("EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA")
        .await;
}

#[tokio::test]
async fn error_codes_are_counted_separately() {
    let Some(srv) = Server::own("error_codes_are_counted_separately").await else {
        return;
    };
    let before = srv.stats().await;
    assert_eq!(before.as_ref().unwrap().connection_errors, [0; 6]);
    srv.get("/engine.io/?EIO=4&transport=abc").await;
    srv.poll("unknown-sid-000000000").await;
    srv.poll("unknown-sid-000000000").await;
    srv.post(&eio_path("transport=polling"), b"").await;
    srv.get("/engine.io/?EIO=3&transport=polling").await;
    let after = srv.stats().await.unwrap();
    assert_eq!(after.connection_errors, [1, 2, 1, 0, 0, 1]);
    assert_eq!(after.clients_count, 0);
    // a successful handshake is not an error and counts as a client
    srv.handshake().await;
    let s = srv.stats().await.unwrap();
    assert_eq!(s.connection_errors, [1, 2, 1, 0, 0, 1]);
    assert_eq!(s.clients_count, 1);
}

#[tokio::test]
async fn websocket_handshake_with_bad_eio_is_refused() {
    let srv = Server::start().await;
    let before = srv.stats().await;
    srv.assert_ws_refused("transport=websocket").await;
    srv.assert_ws_refused("EIO=abc&transport=websocket").await;
    srv.assert_ws_refused("EIO=3&transport=websocket").await;
    srv.assert_errors_grew(&before, 5, 3).await;
}

#[tokio::test]
async fn websocket_handshake_with_bad_transport_is_refused() {
    let srv = Server::start().await;
    let before = srv.stats().await;
    srv.assert_ws_refused("EIO=4").await;
    srv.assert_ws_refused("EIO=4&transport=abc").await;
    srv.assert_errors_grew(&before, 0, 2).await;
}

#[tokio::test]
async fn websocket_refusal_is_an_http_400() {
    // Node answers a refused upgrade with a raw `HTTP/1.1 400 Bad Request`; rsio must not
    // switch protocols either.
    let srv = Server::start().await;
    let mut stream = srv.connect().await;
    let req = format!(
        "GET /engine.io/?EIO=abc&transport=websocket HTTP/1.1\r\nHost: {}\r\n\
         Upgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        srv.addr
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut reader = tokio::io::BufReader::new(stream);
    let res = within(
        "refused upgrade response",
        read_response(&mut reader, false),
    )
    .await
    .expect("an HTTP response");
    assert_eq!(res.status, 400, "{}", res.text());
}
