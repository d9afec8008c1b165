//! Ack waiters never stay behind: every `emit_with_ack` waiter leaves its
//! socket's ack map on answer, timeout, cancel (the future dropped) and
//! disconnect, and the pending counts (socket, namespace, server) say so.

mod inproc;

use std::time::Duration;

use futures_util::future::join_all;
use inproc::{eventually, within, Client};
use rsio::server::{AckError, EmitError, EmitWithAckError, Server, ServerConfig, Socket};

/// Waiters made by the 100,000-emit tests.
const MANY: usize = 100_000;
/// Of those, how many wait at once: each wait costs a tick of the timer (a
/// millisecond), which a batch shares, while a batch much larger than tokio's
/// cooperative budget is polled over and over; 250 ran fastest.
const BATCH: usize = 250;

async fn start() -> (Server, std::net::SocketAddr) {
    let io = Server::new(ServerConfig::default());
    io.ns("/", |_socket: Socket| async move {});
    let addr = inproc::serve(io.router()).await;
    (io, addr)
}

/// The server side of the one connected client.
fn only_socket(io: &Server) -> Socket {
    let sockets = io.sockets().sockets();
    assert_eq!(sockets.len(), 1);
    sockets.into_iter().next().unwrap()
}

fn assert_pending(io: &Server, socket: &Socket, n: usize) {
    assert_eq!(socket.pending_acks(), n, "socket");
    assert_eq!(io.sockets().pending_acks(), n, "namespace");
    assert_eq!(io.pending_acks(), n, "server");
}

#[tokio::test]
async fn timed_out_socket_acks_leave_no_waiter() {
    let (io, addr) = start().await;
    inproc::silent_polling_client(addr).await;
    let socket = only_socket(&io);
    // In batches (see `BATCH`): 100,000 in a row would take minutes.
    for _ in 0..MANY / BATCH {
        let timed_out = socket.timeout(Duration::ZERO);
        let waits = (0..BATCH).map(|_| timed_out.emit_with_ack("ping", &()));
        for res in join_all(waits).await {
            assert!(
                matches!(res, Err(EmitWithAckError::Ack(AckError::Timeout))),
                "{res:?}"
            );
        }
    }
    assert_pending(&io, &socket, 0);
}

#[tokio::test]
async fn timed_out_broadcast_acks_leave_no_waiter() {
    let (io, addr) = start().await;
    inproc::silent_polling_client(addr).await;
    let socket = only_socket(&io);
    for _ in 0..MANY / BATCH {
        let waits = (0..BATCH).map(|_| io.timeout(Duration::ZERO).emit_with_ack("ping", &()));
        for res in join_all(waits).await {
            assert!(res.is_err(), "nobody answers");
        }
    }
    assert_pending(&io, &socket, 0);
}

#[tokio::test]
async fn cancelled_acks_leave_no_waiter() {
    let (io, addr) = start().await;
    let silent = Client::connect(addr, "/").await;
    let socket = only_socket(&io);

    // A broadcast with acks (5 s default wait), given up on after one look.
    let broadcast = io.to(socket.id()).emit_with_ack("ping", &());
    let given_up = tokio::time::timeout(Duration::from_millis(20), broadcast).await;
    assert!(given_up.is_err(), "nobody answers");
    assert_pending(&io, &socket, 0);

    // The same with one socket's emit with ack (no timeout of its own).
    let one = socket.emit_with_ack("ping", &());
    let given_up = tokio::time::timeout(Duration::from_millis(20), one).await;
    assert!(given_up.is_err(), "nobody answers");
    assert_pending(&io, &socket, 0);

    // A spawned wait, aborted while it waits.
    let s = socket.clone();
    let task = tokio::spawn(async move { s.emit_with_ack("ping", &()).await });
    eventually("the spawned waiter", || socket.pending_acks() == 1).await;
    assert_eq!(io.pending_acks(), 1);
    task.abort();
    let _ = task.await;
    assert_pending(&io, &socket, 0);
    drop(silent);
}

#[tokio::test]
async fn an_answered_ack_leaves_no_waiter() {
    let (io, addr) = start().await;
    let mut client = Client::connect(addr, "/").await;
    let socket = only_socket(&io);
    let s = socket.clone();
    let wait = tokio::spawn(async move { s.emit_with_ack("question", &(1,)).await });
    let packet = client.recv().await.expect("the event");
    // `42<id>["question",1]`: answer with `43<id>[42]`.
    let id = packet
        .strip_prefix("42")
        .and_then(|p| p.strip_suffix("[\"question\",1]"))
        .unwrap_or_else(|| panic!("an event that asks for an ack: {packet}"));
    assert_eq!(io.pending_acks(), 1);
    client.send(&format!("43{id}[42]")).await;
    let answer = within("the ack", wait).await.unwrap().expect("answered");
    assert_eq!(answer.get::<i64>(0).unwrap(), 42);
    assert_pending(&io, &socket, 0);
}

#[tokio::test]
async fn an_ack_without_timeout_ends_when_the_socket_disconnects() {
    let (io, addr) = start().await;
    let mut client = Client::connect(addr, "/").await;
    let socket = only_socket(&io);
    let s = socket.clone();
    let wait = tokio::spawn(async move { s.emit_with_ack("ping", &()).await });
    eventually("the waiter", || io.pending_acks() == 1).await;
    // The client leaves the namespace and keeps its connection.
    client.send("41").await;
    let res = within("the end of the wait", wait).await.unwrap();
    assert!(
        matches!(res, Err(EmitWithAckError::Ack(AckError::Disconnected))),
        "{res:?}"
    );
    assert_pending(&io, &socket, 0);

    // Emitting with ack on the socket that left fails at once and keeps nothing
    // (its connection is still open, so the packet itself could be queued).
    let res = within(
        "an emit on a socket that left",
        socket.emit_with_ack("ping", &()),
    )
    .await;
    assert!(
        matches!(res, Err(EmitWithAckError::Emit(EmitError::Disconnected))),
        "{res:?}"
    );
    assert_pending(&io, &socket, 0);
    client.close().await;
}
