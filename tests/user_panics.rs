//! A panic in user code (an event handler, a middleware, a listener) costs the
//! socket it ran for: that client is disconnected or refused, every other
//! client on the same server keeps being served, and the socket and session
//! counts come back to what they were.

mod inproc;

use inproc::{connect_prefix, eventually, Client};
use rsio::{
    parser::Args,
    server::{Namespace, Server, ServerConfig, Socket},
};

/// A handler that panics before it makes its future (a plain `fn`).
fn boom_sync(_: Socket, _: Args) -> std::future::Ready<()> {
    panic!("boom before any future");
}

fn echo_and_booms(socket: &Socket) {
    socket.on("echo", |s: Socket, args: Args| async move {
        let _ = s.emit("echo", args);
    });
    socket.on("boom", |_: Socket, _: Args| async move { panic!("boom") });
    socket.on("boom-later", |_: Socket, _: Args| async move {
        tokio::task::yield_now().await;
        panic!("boom after an await");
    });
    socket.on("boom-sync", boom_sync);
    // Handlers of extractors only, without the socket.
    socket.on(
        "boom-ack",
        |_: rsio::AckSender| async move { panic!("boom") },
    );
    socket.on(
        "boom-data",
        |rsio::Data(n): rsio::Data<Option<u8>>| async move { panic!("boom with {n:?}") },
    );
    socket.on(
        "boom-none",
        || async move { panic!("boom without parameters") },
    );
    socket.on("boom-any", |_: Socket, _: Args| async move {});
    socket.on_any(|_, event, _| {
        if event == "boom-any" {
            panic!("boom in a catch-all listener");
        }
    });
    // A packet to this socket alone, delivered like a broadcast (the outgoing
    // listener runs in the delivery loop).
    socket.on("boom-out", |s: Socket, _: Args| async move {
        let _ = s.namespace().to(s.id()).emit("out-boom", ());
    });
    socket.on_any_outgoing(|_, event, _| {
        if event == "out-boom" {
            panic!("boom in an outgoing listener");
        }
    });
    socket.on("boom-mw", |_: Socket, _: Args| async move {});
    socket.use_middleware(|_, event, _| {
        if event == "boom-mw" {
            panic!("boom in a packet middleware");
        }
        Ok(())
    });
}

async fn start() -> (Server, std::net::SocketAddr) {
    let io = Server::new(ServerConfig::default());
    io.ns("/", |socket: Socket| async move { echo_and_booms(&socket) });
    io.of("/mw")
        .use_middleware(|_: Socket| async move { panic!("boom in a namespace middleware") });
    io.of("/mw-later").use_middleware(|_: Socket| async move {
        tokio::task::yield_now().await;
        panic!("boom in a namespace middleware, after an await")
    });
    io.ns(
        "/conn",
        |_: Socket, rsio::Data(_auth): rsio::Data<serde_json::Value>| async move {
            panic!("boom in a connection handler")
        },
    );
    io.ns("/dis", |socket: Socket| async move {
        echo_and_booms(&socket);
        socket.on_disconnecting(|_, _| panic!("boom in a disconnecting listener"));
        socket.on_disconnect(|_, _| panic!("boom in a disconnect listener"));
    });
    let addr = inproc::serve(io.router()).await;
    (io, addr)
}

fn count(ns: &Namespace) -> usize {
    ns.sockets().len()
}

/// `other` keeps being answered, and the server counts `sockets` sockets on
/// `/` and `sessions` Engine.IO sessions.
async fn still_serving(io: &Server, other: &mut Client, sockets: usize, sessions: usize) {
    other.echo("/", 1).await;
    eventually("the socket count", || count(&io.sockets()) == sockets).await;
    eventually("the session count", || io.client_count() == sessions).await;
    other.echo("/", 2).await;
}

#[tokio::test]
async fn a_panicking_event_handler_disconnects_its_socket_only() {
    let (io, addr) = start().await;
    let mut other = Client::connect(addr, "/").await;
    let events = [
        "boom",
        "boom-later",
        "boom-sync",
        "boom-ack",
        "boom-data",
        "boom-none",
        "boom-any",
        "boom-mw",
        "boom-out",
    ];
    for event in events {
        let mut client = Client::connect(addr, "/").await;
        client.echo("/", 0).await;
        client.send(&format!("42[\"{event}\"]")).await;
        let mut reply = client.recv().await;
        if event == "boom-out" {
            // The packet goes out; its listener's panic costs the socket after.
            assert_eq!(reply.as_deref(), Some(r#"42["out-boom"]"#));
            reply = client.recv().await;
        }
        assert_eq!(reply.as_deref(), Some("41"), "{event}: a DISCONNECT");
        // Its namespace socket is gone; its connection stays until it closes it.
        still_serving(&io, &mut other, 1, 2).await;
        client.close().await;
        still_serving(&io, &mut other, 1, 1).await;
    }
}

#[tokio::test]
async fn a_panicking_namespace_middleware_refuses_the_connection() {
    let (io, addr) = start().await;
    let mut other = Client::connect(addr, "/").await;
    for nsp in ["/mw", "/mw-later"] {
        let mut client = Client::open(addr, "/socket.io/").await;
        let reply = client.join(nsp).await;
        assert!(
            reply.starts_with(&connect_prefix(nsp, '4')),
            "{nsp}: CONNECT_ERROR, got {reply}"
        );
        assert_eq!(count(&io.of(nsp)), 0);
        still_serving(&io, &mut other, 1, 2).await;
        // The same connection can still join a namespace that works.
        assert!(client.join("/").await.starts_with("40"));
        client.echo("/", 3).await;
        client.close().await;
        still_serving(&io, &mut other, 1, 1).await;
    }
}

#[tokio::test]
async fn a_panicking_connection_handler_disconnects_its_socket() {
    let (io, addr) = start().await;
    let mut other = Client::connect(addr, "/").await;
    let mut client = Client::open(addr, "/socket.io/").await;
    let reply = client.join("/conn").await;
    assert!(reply.starts_with("40/conn,"), "CONNECT, got {reply}");
    assert_eq!(client.recv().await.as_deref(), Some("41/conn,"));
    eventually("the /conn socket count", || count(&io.of("/conn")) == 0).await;
    still_serving(&io, &mut other, 1, 2).await;
    client.close().await;
    still_serving(&io, &mut other, 1, 1).await;
}

#[tokio::test]
async fn panicking_disconnect_listeners_do_not_stop_the_cleanup() {
    let (io, addr) = start().await;
    let dis = io.of("/dis");
    let mut other = Client::connect(addr, "/").await;

    // The connection closes: the session and the socket go, rooms included.
    let mut client = Client::connect(addr, "/dis").await;
    client.echo("/dis", 4).await;
    assert_eq!(count(&dis), 1);
    client.close().await;
    eventually("the /dis socket count", || count(&dis) == 0).await;
    still_serving(&io, &mut other, 1, 1).await;
    assert!(
        dis.adapter().rooms().is_empty(),
        "{:?}",
        dis.adapter().rooms()
    );

    // A panicking handler, then the panicking disconnect listeners.
    let mut client = Client::connect(addr, "/dis").await;
    client.send("42/dis,[\"boom\"]").await;
    assert_eq!(client.recv().await.as_deref(), Some("41/dis,"));
    eventually("the /dis socket count", || count(&dis) == 0).await;
    still_serving(&io, &mut other, 1, 2).await;
    client.close().await;
    still_serving(&io, &mut other, 1, 1).await;
    assert!(
        dis.adapter().rooms().is_empty(),
        "{:?}",
        dis.adapter().rooms()
    );
}
