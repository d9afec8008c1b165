//! A middleware may join rooms before it decides (as `io.use` often does with a
//! user's own room): when it then refuses, or panics, or its client is gone by
//! the time it accepts, the socket leaves them, as Node's cleanup does.
//! Nothing is left behind in the namespace's rooms.

mod inproc;

use std::sync::Arc;

use inproc::{eventually, within, Client};
use rsio::prelude::*;
use tokio::sync::{mpsc, Notify};

/// Joins `m` in the middleware, then refuses `{"deny":true}`, panics on
/// `{"panic":true}`, and on `{"wait":true}` says so on `entered` and accepts
/// once `gate` is notified.
fn server(entered: mpsc::UnboundedSender<()>, gate: Arc<Notify>) -> Server {
    let io = Server::builder().build();
    io.use_middleware(move |s: Socket| {
        let (entered, gate) = (entered.clone(), gate.clone());
        async move {
            s.join("m");
            let auth = s.handshake().auth().clone();
            if auth["panic"] == true {
                panic!("a middleware that panics");
            }
            if auth["deny"] == true {
                return Err(ConnectError::new("denied"));
            }
            if auth["wait"] == true {
                let _ = entered.send(());
                gate.notified().await;
            }
            Ok(())
        }
    });
    io.ns("/", |_: Socket| async move {});
    io
}

fn rooms(io: &Server) -> Vec<String> {
    let mut rooms = io.of("/").adapter().rooms();
    rooms.sort();
    rooms
}

#[tokio::test(flavor = "current_thread")]
async fn a_refused_or_panicking_middleware_leaves_no_room_behind() {
    let (entered, _) = mpsc::unbounded_channel();
    let io = server(entered, Arc::new(Notify::new()));
    let addr = inproc::serve(io.router()).await;
    for (auth, answer) in [
        (r#"{"deny":true}"#, r#"44{"message":"denied"}"#),
        (r#"{"panic":true}"#, r#"44{"message":"server error"}"#),
    ] {
        let mut c = Client::open(addr, "/socket.io/").await;
        c.send(&format!("40{auth}")).await;
        assert_eq!(c.recv().await.as_deref(), Some(answer), "{auth}");
        eventually("the refused socket's rooms left", || rooms(&io).is_empty()).await;
    }
    // An accepted one keeps what its middleware joined.
    let mut ok = Client::open(addr, "/socket.io/").await;
    let reply = ok.join("/").await;
    assert!(reply.starts_with("40{"), "{reply}");
    let sid = io.of("/").sockets()[0].id().to_string();
    let mut expected = vec!["m".to_string(), sid];
    expected.sort();
    eventually("the accepted socket's rooms", || rooms(&io) == expected).await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_middleware_that_accepts_after_its_client_left_leaves_no_room_behind() {
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let gate = Arc::new(Notify::new());
    let io = server(entered_tx, gate.clone());
    let addr = inproc::serve(io.router()).await;
    let mut c = Client::open(addr, "/socket.io/").await;
    c.send(r#"40{"wait":true}"#).await;
    within("the middleware to run", entered.recv()).await;
    assert_eq!(rooms(&io), ["m"], "joined in the middleware");
    c.close().await;
    // Let the server see the close before the middleware accepts.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    gate.notify_one();
    eventually("the gone socket's rooms left", || rooms(&io).is_empty()).await;
    assert!(io.of("/").sockets().is_empty());
}
