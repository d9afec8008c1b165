//! Upgrade from HTTP long-polling to WebSocket: probe, switch, refusals, upgrade timeout, and
//! exactly-once in-order delivery across the switch.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tokio::sync::{mpsc, oneshot, Mutex};

/// A polling session whose POSTs are serialised (the server allows one outstanding POST).
struct Session {
    srv: Arc<Server>,
    sid: String,
    post_lock: Mutex<()>,
}

impl Session {
    async fn open(srv: &Arc<Server>) -> Arc<Session> {
        let (sid, _) = srv.handshake().await;
        Arc::new(Session {
            srv: srv.clone(),
            sid,
            post_lock: Mutex::new(()),
        })
    }

    async fn post(&self, body: &str) {
        let _guard = self.post_lock.lock().await;
        self.srv.push_ok(&self.sid, body).await;
    }

    fn ws_query(&self) -> String {
        format!("EIO=4&transport=websocket&sid={}", self.sid)
    }

    /// Opens the WebSocket for this sid and completes the probe (`2probe` → `3probe`).
    async fn probe(&self) -> Ws {
        let mut ws = self.srv.ws(&self.ws_query()).await;
        ws.send_text("2probe").await;
        assert_eq!(ws.recv_text().await, "3probe");
        ws
    }
}

/// Long-polls like a client that is upgrading: answers pings, sends every message (`4…`
/// data) to `out`, and returns once a response carries a noop (`6`), i.e. the server has
/// released the polling transport (returns 200). With `stop_on_noop == false` it keeps
/// polling through noops until an error status (returned) or a close packet (returns 1).
async fn poll_loop(
    sess: Arc<Session>,
    out: mpsc::UnboundedSender<String>,
    stop_on_noop: bool,
) -> u16 {
    loop {
        let res = sess.srv.poll(&sess.sid).await;
        if res.status != 200 {
            return res.status;
        }
        let mut noop = false;
        for p in decode_payload(&res.text()) {
            match p {
                Packet::Text('2', d) if d.is_empty() => sess.post("3").await,
                Packet::Text('4', d) => {
                    let _ = out.send(d);
                }
                Packet::Text('6', _) => noop = true,
                Packet::Text('1', _) if !stop_on_noop => return 1,
                other => panic!("unexpected packet while polling: {other:?}"),
            }
        }
        if noop {
            if stop_on_noop {
                return 200;
            }
            // don't hammer a server that answers every GET with a noop while upgrading
            sleep_ms(10).await;
        }
    }
}

/// Handshake over polling and a complete upgrade; returns the session and its WebSocket.
async fn upgraded(srv: &Arc<Server>) -> (Arc<Session>, Ws) {
    let sess = Session::open(srv).await;
    let mut ws = sess.probe().await;
    ws.send_text("5").await;
    // the echo proves the switch happened on the server
    ws.send_text("4switched").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4switched");
    (sess, ws)
}

#[tokio::test]
async fn successful_upgrade() {
    let srv = Arc::new(Server::start().await);
    let sess = Session::open(&srv).await;
    let mut ws = sess.probe().await;
    // the polling transport is released with a noop (pings answered if one comes first)
    let (tx, _rx) = mpsc::unbounded_channel();
    let status = within(
        "GET answered with a noop",
        poll_loop(sess.clone(), tx, true),
    )
    .await;
    assert_eq!(status, 200);
    ws.send_text("5").await;
    ws.send_text("4hello").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4hello");
    ws.send_binary(&[1, 2, 3]).await;
    loop {
        match ws.recv_any().await {
            Some(Frame::Binary(b)) => break assert_eq!(b, [1, 2, 3]),
            Some(Frame::Text(t)) if t == "2" => ws.send_text("3").await,
            other => panic!("expected the binary echo, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn polling_requests_after_upgrade_are_bad_requests() {
    let srv = Arc::new(Server::start().await);
    let (sess, mut ws) = upgraded(&srv).await;
    let before = srv.stats().await;
    let res = srv.poll(&sess.sid).await;
    assert_eio_error(&res, 400, 3, "Bad request");
    let res = srv.push(&sess.sid, "4hello").await;
    assert_eio_error(&res, 400, 3, "Bad request");
    srv.assert_errors_grew(&before, 3, 2).await;
    // the session itself is unaffected
    ws.send_text("4still").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4still");
}

#[tokio::test]
async fn second_websocket_after_upgrade_is_refused() {
    let srv = Arc::new(Server::start().await);
    let (sess, mut ws) = upgraded(&srv).await;
    srv.assert_ws_refused(&sess.ws_query()).await;
    ws.send_text("4hello").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4hello");
}

#[tokio::test]
async fn second_websocket_during_upgrade_is_refused() {
    let srv = Arc::new(Server::start().await);
    let sess = Session::open(&srv).await;
    let (tx, _rx) = mpsc::unbounded_channel();
    let poller = tokio::spawn(poll_loop(sess.clone(), tx, false));
    let mut ws = sess.probe().await;
    srv.assert_ws_refused(&sess.ws_query()).await;
    ws.send_text("5").await;
    ws.send_text("4hello").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4hello");
    // the poller ends with the 400 of a polling request after the upgrade (or with a close
    // packet if a GET was still pending at the switch)
    let status = within("poller end", poller).await.unwrap();
    assert!([1, 400].contains(&status), "poller ended with {status}");
}

#[tokio::test]
async fn upgraded_session_heartbeat_runs_over_websocket() {
    let srv = Arc::new(Server::start().await);
    let (_sess, mut ws) = upgraded(&srv).await;
    for i in 0..2 {
        assert_eq!(ws.recv_text().await, "2", "ping {i} over the websocket");
        ws.send_text("3").await;
    }
    ws.send_text("4alive").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4alive");
}

#[tokio::test]
async fn upgrade_timeout_closes_the_probe_and_polling_continues() {
    let Some(srv) = Server::with_flags(
        "upgrade_timeout_closes_the_probe_and_polling_continues",
        &["--upgrade-timeout", "300"],
    )
    .await
    else {
        return;
    };
    let srv = Arc::new(srv);
    let sess = Session::open(&srv).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let poller = tokio::spawn(poll_loop(sess.clone(), tx, false));
    let started = Instant::now();
    let mut ws = sess.probe().await;
    // never send `5`
    let seen = ws.expect_closed_silently().await;
    assert!(
        seen.is_empty(),
        "nothing but the close after 3probe: {seen:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "probe closed after {waited:?}, upgrade timeout is 300 ms"
    );
    // polling still carries the session
    sess.post("4after").await;
    let got = within("echo over polling after the upgrade timeout", rx.recv())
        .await
        .expect("poller alive");
    assert_eq!(got, "after");
    assert!(!poller.is_finished(), "poller ended: session lost");
    poller.abort();
}

/// THE UPGRADE RACE. 200 messages `4<n>` are POSTed in 10 batches: `before_probe` batches
/// before the probe starts, the next ones concurrently with the probe and the release of
/// polling, and the last `after_noop` ones after polling was released (noop received) but
/// before `5`; then 50 more go over the WebSocket. Everything echoed is collected from the
/// polling responses (until the noop) and then from the WebSocket. The concatenation must
/// be exactly 0..N-1: no loss, no duplicate, no reordering across the switch.
async fn upgrade_race(before_probe: usize, after_noop: usize) {
    const BATCHES: usize = 10;
    const PER_BATCH: usize = 20;
    const OVER_WS: usize = 50;
    const POSTED: usize = BATCHES * PER_BATCH;
    const TOTAL: usize = POSTED + OVER_WS;
    assert!(before_probe + after_noop <= BATCHES);
    let batch = |b: usize| {
        (b * PER_BATCH..(b + 1) * PER_BATCH)
            .map(|n| format!("4{n}"))
            .collect::<Vec<_>>()
            .join("\x1e")
    };

    let srv = Arc::new(Server::start().await);
    let sess = Session::open(&srv).await;
    let (tx, mut polled_rx) = mpsc::unbounded_channel();
    let poller = tokio::spawn(poll_loop(sess.clone(), tx, true));

    let (probe_tx, probe_rx) = oneshot::channel();
    let concurrent_end = BATCHES - after_noop;
    let poster = {
        let sess = sess.clone();
        tokio::spawn(async move {
            let mut probe_tx = Some(probe_tx);
            for b in 0..concurrent_end {
                if b == before_probe {
                    let _ = probe_tx.take().unwrap().send(());
                }
                sess.post(&batch(b)).await;
            }
            if let Some(tx) = probe_tx {
                let _ = tx.send(());
            }
        })
    };

    within("probe signal", probe_rx).await.unwrap();
    let mut ws = sess.probe().await;
    // like a real client: pause polling (wait for the noop) and writing, then upgrade
    let status = within("polling released by a noop", poller).await.unwrap();
    assert_eq!(status, 200);
    within("concurrent POSTs done", poster).await.unwrap();
    for b in concurrent_end..BATCHES {
        sess.post(&batch(b)).await;
    }
    ws.send_text("5").await;
    for n in POSTED..TOTAL {
        ws.send_text(&format!("4{n}")).await;
    }

    let mut seq = Vec::new();
    while let Ok(d) = polled_rx.try_recv() {
        seq.push(d);
    }
    let via_polling = seq.len();
    within("all echoes over the websocket", async {
        while seq.len() < TOTAL {
            match ws.recv_any().await {
                Some(Frame::Text(t)) if t == "2" => ws.send_text("3").await,
                Some(Frame::Text(t)) => match t.strip_prefix('4') {
                    Some(d) => seq.push(d.to_string()),
                    None => panic!("unexpected packet over the websocket: {t:?}"),
                },
                other => panic!(
                    "websocket ended after {} of {TOTAL} messages: {other:?}",
                    seq.len()
                ),
            }
        }
    })
    .await;
    eprintln!("upgrade race: {via_polling} of {TOTAL} echoes came by polling");
    let expected = (0..TOTAL).map(|n| n.to_string()).collect::<Vec<_>>();
    if seq != expected {
        let first_bad = seq
            .iter()
            .zip(&expected)
            .position(|(a, b)| a != b)
            .unwrap_or(seq.len().min(expected.len()));
        panic!(
            "sequence broken at index {first_bad} ({via_polling} came by polling): \
             got {:?}, expected {:?}",
            &seq[first_bad.saturating_sub(2)..(first_bad + 3).min(seq.len())],
            &expected[first_bad.saturating_sub(2)..(first_bad + 3).min(expected.len())]
        );
    }
    // nothing extra afterwards: one more echo is the very next message
    ws.send_text("4end").await;
    assert_eq!(ws.recv_text_answering_pings().await, "4end");
}

#[tokio::test]
async fn upgrade_race_all_posts_concurrent_with_probe() {
    upgrade_race(0, 0).await;
}

#[tokio::test]
async fn upgrade_race_probe_after_first_post() {
    upgrade_race(1, 0).await;
}

#[tokio::test]
async fn upgrade_race_posts_around_the_noop() {
    upgrade_race(2, 4).await;
}

#[tokio::test]
async fn upgrade_race_half_before_probe_half_after_noop() {
    upgrade_race(5, 5).await;
}

#[tokio::test]
async fn upgrade_race_all_posts_before_probe() {
    upgrade_race(10, 0).await;
}

#[tokio::test]
async fn upgrade_race_all_posts_after_noop() {
    upgrade_race(0, 10).await;
}
