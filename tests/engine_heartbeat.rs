//! Heartbeat (Engine.IO v4: the server pings, the client pongs) over polling and WebSocket,
//! with the conformance timings: pingInterval 300 ms, pingTimeout 200 ms.
//!
//! Timing semantics are the conformance suite's: the first ping comes pingInterval after
//! open, and a session whose ping went unanswered is gone at pingInterval + pingTimeout.
//! Only "not earlier than" bounds are asserted (a loaded machine only makes things later).

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The first ping is scheduled pingInterval after the server sent the open packet, which is
/// before we received it: allow half of it for that delay. (Later pings are not timed: a
/// server may schedule them from the previous ping or from the pong.)
const PING_NOT_BEFORE: Duration = Duration::from_millis(PING_INTERVAL / 2);

/// When the polling ping-timeout test polls, counted from receiving the handshake response:
/// exactly the conformance suite's `sleep(PING_INTERVAL + PING_TIMEOUT)`, no grace. A server
/// passes reliably only if its deadline is anchored before the open packet leaves (absolute
/// deadlines from session creation), not chained from a task that starts later.
const CLOSED_AT_MS: u64 = PING_INTERVAL + PING_TIMEOUT;

#[tokio::test]
async fn polling_ping_pong_three_times() {
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    let opened = Instant::now();
    for i in 0..3 {
        let res = srv.poll(&sid).await;
        assert_eq!(res.status, 200, "poll {i}: {}", res.text());
        assert_eq!(res.text(), "2", "poll {i} brings the ping");
        if i == 0 {
            let waited = opened.elapsed();
            assert!(
                waited >= PING_NOT_BEFORE,
                "first ping came {waited:?} after open, pingInterval is {PING_INTERVAL} ms"
            );
        }
        let res = srv.push(&sid, "3").await;
        assert_eq!(res.status, 200, "pong {i}: {}", res.text());
        assert_eq!(res.text(), "ok");
    }
    // still alive: a message round-trips
    srv.push_ok(&sid, "4alive").await;
    assert_eq!(srv.poll_data(&sid).await, "4alive");
}

#[tokio::test]
async fn polling_session_closes_upon_ping_timeout() {
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    let opened = tokio::time::Instant::now();
    srv.wait_clients(1).await;
    tokio::time::sleep_until(opened + Duration::from_millis(CLOSED_AT_MS)).await;
    let res = srv.poll(&sid).await;
    assert_eq!(
        res.status,
        400,
        "session must be gone at pingInterval+pingTimeout, got {}",
        res.text()
    );
    assert_eio_error(&res, 400, 1, "Session ID unknown");
    srv.wait_clients(0).await;
}

#[tokio::test]
async fn polling_unanswered_ping_closes_the_session() {
    // the ping is fetched but the pong never sent
    let srv = Server::start().await;
    let (sid, _) = srv.handshake().await;
    let res = srv.poll(&sid).await;
    assert_eq!(res.text(), "2");
    sleep_ms(PING_TIMEOUT + 100).await;
    let res = srv.poll(&sid).await;
    assert_eq!(res.status, 400, "{}", res.text());
}

#[tokio::test]
async fn websocket_ping_pong_three_times() {
    let srv = Server::start().await;
    let (mut ws, _) = srv.ws_session().await;
    let opened = Instant::now();
    for i in 0..3 {
        assert_eq!(ws.recv_text().await, "2", "frame {i} is the ping");
        if i == 0 {
            let waited = opened.elapsed();
            assert!(
                waited >= PING_NOT_BEFORE,
                "first ping came {waited:?} after open, pingInterval is {PING_INTERVAL} ms"
            );
        }
        ws.send_text("3").await;
    }
    ws.send_text("4alive").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4alive");
}

#[tokio::test]
async fn websocket_session_closes_upon_ping_timeout() {
    let srv = Server::start().await;
    let (mut ws, _) = srv.ws_session().await;
    srv.wait_clients(1).await;
    let seen = ws.expect_closed_silently().await;
    // a ping was sent first: the close is the ping timeout, not something else
    assert_eq!(seen, [Frame::Text("2".into())], "frames before the close");
    srv.wait_clients(0).await;
}

#[tokio::test]
async fn websocket_messages_do_not_replace_pongs() {
    // only a pong answers a ping: a client that keeps sending messages but never `3`
    // still times out
    let srv = Server::start().await;
    let (mut ws, _) = srv.ws_session().await;
    let deadline = Instant::now() + STEP;
    let mut closed = false;
    while Instant::now() < deadline {
        ws.send_text_lossy("4busy").await;
        match tokio::time::timeout(Duration::from_millis(50), ws.recv_any()).await {
            Ok(Some(Frame::Close(_))) | Ok(None) => {
                closed = true;
                break;
            }
            _ => {}
        }
    }
    assert!(closed, "session without pongs must time out");
}
