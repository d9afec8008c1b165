//! Connection state recovery with `skip_middlewares: false` on one server: a
//! restored socket whose middleware takes its time still gets, once and in
//! order, what its rooms got while it was away, while its middleware ran, and
//! after; one its middleware refuses is in no room.

mod inproc;

use std::{sync::Arc, time::Duration};

use inproc::{within, Client};
use rsio::prelude::*;
use tokio::sync::{mpsc, Semaphore};

/// A server that keeps sessions and runs the middleware on a restore too.
/// The middleware refuses `{"refuse": true}`, and for `{"slow": true}` says
/// so on `entered` and waits for a permit of `release`.
fn server(entered: mpsc::UnboundedSender<()>, release: Arc<Semaphore>) -> Server {
    let mut recovery = RecoveryConfig::default();
    recovery.max_disconnection_duration = Duration::from_secs(10);
    recovery.skip_middlewares = false;
    let io = Server::builder()
        .connection_state_recovery(recovery)
        .build();
    io.use_middleware(move |s: Socket| {
        let entered = entered.clone();
        let release = release.clone();
        async move {
            let auth = s.handshake().auth().clone();
            if auth["refuse"] == true {
                return Err(ConnectError::new("refused"));
            }
            if auth["slow"] == true {
                let _ = entered.send(());
                release.acquire().await.expect("open").forget();
            }
            Ok(())
        }
    });
    io.ns("/", |socket: Socket| async move {
        socket.on("join", |s: Socket, ack: AckSender| async move {
            s.join("r");
            let _ = ack.send(());
        });
    });
    io
}

/// The JSON of a `40{…}` CONNECT reply.
fn connect_reply(text: &str) -> serde_json::Value {
    let json = text
        .strip_prefix("40")
        .unwrap_or_else(|| panic!("expected a CONNECT reply, got {text}"));
    serde_json::from_str(json).expect("CONNECT reply JSON")
}

/// `42["m",n,"<offset>"]`: n and the offset.
fn event_m(text: &str) -> (i64, String) {
    let json = text
        .strip_prefix("42")
        .unwrap_or_else(|| panic!("expected an event, got {text}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("event JSON");
    assert_eq!(v[0], "m", "event {text}");
    (
        v[1].as_i64().expect("n"),
        v[2].as_str().expect("an offset").to_string(),
    )
}

/// A client joined to room `r`, with its CONNECT reply.
async fn member(addr: std::net::SocketAddr) -> (Client, serde_json::Value) {
    let mut c = Client::open(addr, "/socket.io/").await;
    let reply = connect_reply(&c.join("/").await);
    c.send("421[\"join\"]").await;
    assert_eq!(c.recv().await.as_deref(), Some("431[]"));
    (c, reply)
}

/// Waits until room `r` has `n` sockets on `io`.
async fn members(io: &Server, n: usize) {
    within("the room's sockets", async {
        while io.to("r").fetch_sockets().await.expect("local").len() != n {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "current_thread")]
async fn a_restored_socket_gets_what_its_rooms_got_while_its_middleware_ran() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let io = server(entered_tx, release.clone());
    let addr = inproc::serve(io.router()).await;

    let (mut c, first) = member(addr).await;
    io.to("r").emit("m", &1).unwrap();
    let (n, offset) = event_m(&c.recv().await.expect("m 1"));
    assert_eq!(n, 1);
    c.close().await;
    members(&io, 0).await;
    // Missed while away: in the log.
    io.to("r").emit("m", &2).unwrap();

    let mut back = Client::open(addr, "/socket.io/").await;
    let pid = first["pid"].as_str().expect("a pid");
    back.send(&format!(
        "40{{\"pid\":\"{pid}\",\"offset\":\"{offset}\",\"slow\":true}}"
    ))
    .await;
    within("the middleware to run", entered.recv()).await;
    // While its middleware waits: the socket is in no room yet.
    io.to("r").emit("m", &3).unwrap();
    release.add_permits(1);

    let reply = connect_reply(&back.recv().await.expect("the CONNECT reply"));
    assert_eq!(reply["sid"], first["sid"], "the session is restored");
    let mut got = Vec::new();
    for _ in 0..2 {
        got.push(event_m(&back.recv().await.expect("a missed packet")).0);
    }
    assert_eq!(
        got,
        [2, 3],
        "missed while away, then while the middleware ran"
    );
    // Live from now on, and nothing twice: the next one is 4.
    io.to("r").emit("m", &4).unwrap();
    assert_eq!(event_m(&back.recv().await.expect("m 4")).0, 4);
    members(&io, 1).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_restored_socket_its_middleware_refuses_is_in_no_room() {
    let (entered_tx, _entered) = mpsc::unbounded_channel();
    let io = server(entered_tx, Arc::new(Semaphore::new(0)));
    let addr = inproc::serve(io.router()).await;

    let (mut c, first) = member(addr).await;
    io.to("r").emit("m", &1).unwrap();
    let (_, offset) = event_m(&c.recv().await.expect("m 1"));
    c.close().await;
    members(&io, 0).await;

    let mut back = Client::open(addr, "/socket.io/").await;
    let pid = first["pid"].as_str().expect("a pid");
    back.send(&format!(
        "40{{\"pid\":\"{pid}\",\"offset\":\"{offset}\",\"refuse\":true}}"
    ))
    .await;
    let refused = back.recv().await.expect("an answer");
    assert!(refused.starts_with("44{"), "CONNECT_ERROR, got {refused}");
    assert!(refused.contains("refused"), "{refused}");
    io.to("r").emit("m", &2).unwrap();
    members(&io, 0).await;
}
