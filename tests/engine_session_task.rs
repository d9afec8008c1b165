//! A panic that unwinds through the task serving a session (here: an
//! [`EngineHandler`] that panics) still takes the session out of the engine's
//! table, and the other sessions keep being served.

mod inproc;

use std::sync::Arc;

use inproc::{eventually, http, Client};
use rsio::engine::{CloseReason, Engine, EngineConfig, EngineHandler, Frame, Message, Session};

/// Echoes text messages; panics on `boom`.
struct Boom;

impl EngineHandler for Boom {
    type Data = ();
    fn on_open(&self, _: &Arc<Session<()>>) {}
    fn on_message(&self, session: &Arc<Session<()>>, message: Message) {
        if let Message::Text(text) = message {
            let text = std::str::from_utf8(&text).unwrap();
            if text == "boom" {
                panic!("boom in on_message");
            }
            session.send(Frame::message(text));
        }
    }
    fn on_close(&self, _: &Arc<Session<()>>, _: CloseReason) {}
}

async fn start() -> (Arc<Engine<Boom>>, std::net::SocketAddr) {
    let engine = Engine::new(EngineConfig::default(), Boom);
    let addr = inproc::serve(engine.router()).await;
    (engine, addr)
}

async fn echo(client: &mut Client, text: &str) {
    client.send(&format!("4{text}")).await;
    assert_eq!(client.recv().await, Some(format!("4{text}")));
}

#[tokio::test]
async fn a_panic_on_a_websocket_session_removes_it() {
    let (engine, addr) = start().await;
    let mut other = Client::open(addr, "/engine.io/").await;
    let mut client = Client::open(addr, "/engine.io/").await;
    echo(&mut client, "hello").await;
    assert_eq!(engine.clients_count(), 2);
    client.send("4boom").await;
    assert_eq!(client.recv().await, None, "the connection ends");
    eventually("the session leaves the table", || {
        engine.clients_count() == 1
    })
    .await;
    echo(&mut other, "still here").await;
}

#[tokio::test]
async fn a_panic_on_a_polling_session_removes_it() {
    let (engine, addr) = start().await;
    let mut other = Client::open(addr, "/engine.io/").await;
    let open = http(addr, "GET /engine.io/?EIO=4&transport=polling", "").await;
    let sid = open
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("an open packet: {open}"))
        .to_owned();
    assert_eq!(engine.clients_count(), 2);
    http(
        addr,
        &format!("POST /engine.io/?EIO=4&transport=polling&sid={sid}"),
        "4boom",
    )
    .await;
    eventually("the session leaves the table", || {
        engine.clients_count() == 1
    })
    .await;
    echo(&mut other, "still here").await;
}
