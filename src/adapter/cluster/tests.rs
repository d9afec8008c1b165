//! The cluster adapter's bookkeeping of broadcasts with acks, on a real link (a
//! socketpair standing for the primary) and a real server with polling clients.

use std::{sync::Arc, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use rsio_ipc::{
    Broadcast, Frame as IpcFrame, IpcConnection, IpcReader, IpcSender, Message, Target,
};
use tokio::sync::mpsc::WeakUnboundedSender;

use super::{link::ClusterLink, ClusterAdapter};
use crate::{
    adapter::{Adapter, BroadcastOptions, EncodedPacket},
    engine::Frame,
    parser::Args,
    server::{Server, ServerConfig, Socket},
};

/// Worker 0 of 2, its server, and the primary's end of its socketpair (kept
/// open: what the link sends must have somewhere to go).
struct Worker {
    link: Arc<ClusterLink>,
    io: Server,
    _primary: (IpcReader, IpcSender),
}

fn worker(window: Duration) -> Worker {
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let (_, sender) = IpcConnection::new(ours).into_split();
    let primary = IpcConnection::new(theirs).into_split();
    let link = ClusterLink::with_remote_ack_window(0, 2, sender, window);
    let factory_link = link.clone();
    let io = Server::with_adapter(
        ServerConfig::default(),
        Arc::new(move |nsp: &str| factory_link.adapter(nsp) as Arc<dyn Adapter>),
    );
    io.ns("/", |_socket: Socket| async move {});
    link.attach(&io).unwrap();
    Worker {
        link,
        io,
        _primary: primary,
    }
}

async fn call(io: &Server, method: &str, uri: &str, body: &'static str) -> String {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "text/plain;charset=UTF-8")
        .body(Body::from(body))
        .unwrap();
    let res = io.engine().clone().handle(req).await;
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Connects a polling client to namespace `/`; its socket on the server.
async fn connect(io: &Server) -> Socket {
    let open = call(io, "GET", "/socket.io/?EIO=4&transport=polling", "").await;
    let sid = open.split('"').nth(3).unwrap().to_string();
    let uri = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let before: Vec<_> = sockets(io).iter().map(Socket::id).collect();
    assert_eq!(call(io, "POST", &uri, "40").await, "ok");
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(new) = sockets(io).into_iter().find(|s| !before.contains(&s.id())) {
                return new;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the client's socket within 5 s")
}

fn sockets(io: &Server) -> Vec<Socket> {
    io.of("/").select(&BroadcastOptions::default())
}

/// A broadcast of worker 1 (request 7) asking for acks with id `ack_id`.
fn broadcast_with_ack(ack_id: u64) -> Message {
    Message::Broadcast(Broadcast {
        nsp: "/".into(),
        target: Target::default(),
        ack: Some((1, 7, ack_id)),
        offset: None,
        frames: vec![IpcFrame::Text(Bytes::from(format!("42{ack_id}[\"ping\"]")))],
    })
}

/// Waits (at most 5 s) until no forward is pending and no socket holds one of
/// `waiters` (taken earlier); the counts at the end: forwards, and sockets.
async fn settled(link: &ClusterLink, waiters: &[WeakUnboundedSender<Args>]) -> (usize, usize) {
    let left = || {
        let (forwards, sockets) = link.pending_remote_acks();
        let held: usize = waiters.iter().map(|w| w.strong_count()).sum();
        (forwards, sockets.max(held))
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while left() != (0, 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    left()
}

#[tokio::test]
async fn remote_ack_waiters_go_when_the_window_ends() {
    let w = worker(Duration::from_millis(200));
    let socket = connect(&w.io).await;
    w.link.dispatch(broadcast_with_ack(42));
    assert_eq!(
        w.link.pending_remote_acks(),
        (1, 1),
        "one forward, one socket waiting"
    );
    let waiters = w.link.remote_ack_waiters();
    assert_eq!(
        settled(&w.link, &waiters).await,
        (0, 0),
        "the forward ends with its window, and the socket's ack map holds no waiter"
    );
    assert!(socket.connected());
}

#[tokio::test]
async fn remote_ack_waiters_go_when_the_emitter_leaves() {
    let w = worker(Duration::from_secs(600));
    let _sockets = (connect(&w.io).await, connect(&w.io).await);
    w.link.dispatch(broadcast_with_ack(43));
    assert_eq!(w.link.pending_remote_acks(), (1, 2));
    let waiters = w.link.remote_ack_waiters();
    // Another worker's exit changes nothing.
    w.link.dispatch(Message::WorkerExited { worker: 5 });
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(w.link.pending_remote_acks(), (1, 2));
    w.link.dispatch(Message::WorkerExited { worker: 1 });
    assert_eq!(
        settled(&w.link, &waiters).await,
        (0, 0),
        "ended long before the window"
    );
}

#[tokio::test]
async fn remote_ack_forward_ends_when_its_sockets_disconnect() {
    let w = worker(Duration::from_secs(600));
    let (a, b) = (connect(&w.io).await, connect(&w.io).await);
    w.link.dispatch(broadcast_with_ack(44));
    assert_eq!(w.link.pending_remote_acks(), (1, 2));
    a.disconnect(false);
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(w.link.pending_remote_acks(), (1, 1), "b still waits");
    b.disconnect(false);
    assert_eq!(settled(&w.link, &[]).await, (0, 0));
}

#[tokio::test]
async fn remote_ack_forward_ends_when_every_client_acked() {
    let w = worker(Duration::from_secs(600));
    let socket = connect(&w.io).await;
    w.link.dispatch(broadcast_with_ack(45));
    assert_eq!(w.link.pending_remote_acks(), (1, 1));
    socket.on_ack(45, Args::new(&("pong",)).unwrap());
    assert_eq!(settled(&w.link, &[]).await, (0, 0));
}

#[tokio::test]
async fn emitter_forgets_its_remote_acks_when_it_stops_waiting() {
    let w = worker(Duration::from_secs(600));
    let adapter: Arc<ClusterAdapter> = w.link.adapter("/");
    let packet = EncodedPacket(vec![Frame::Text("42[\"x\"]".into())].into());
    let acks = adapter
        .broadcast_with_ack_remote(&packet, &BroadcastOptions::default(), 1)
        .expect("one other worker");
    assert_eq!(w.link.acks().len(), 1);
    drop(acks);
    assert_eq!(w.link.acks().len(), 0);
}

#[tokio::test]
async fn a_restore_holds_its_rooms_in_the_hints_apart_from_their_members() {
    use super::hints::{HintTable, Hints};
    use crate::adapter::{LocalAdapter, RoomHold};
    let w = worker(Duration::from_secs(1));
    let (table, fd) = HintTable::create_with(64, 4).unwrap();
    w.link
        .use_hints(Hints::new(HintTable::open(&fd).unwrap(), 0).unwrap());
    let bit = |room: &str| table.has_lane(table.slot("/", room), 0);
    let sink = || w.link.redis_interest("/").expect("hints");
    let hold = RoomHold::new(sink(), &["r".into(), "s".into()]);
    assert!(bit("r") && bit("s"), "held before the stream is read");
    // The restored socket joins "r": its membership counts apart.
    let rooms = LocalAdapter::with_interest(sink());
    let id = crate::engine::Sid::random();
    rooms.add_all(id, &["r".into()]);
    drop(hold);
    assert!(bit("r"), "its member keeps it");
    assert!(!bit("s"), "let go with the hold");
    rooms.del_all(id);
    assert!(!bit("r"), "and with its last member");
}

#[tokio::test]
async fn request_ids_carry_the_process_id_so_two_processes_of_one_worker_never_share_one() {
    // During a reload the old and the new process of a worker both ask, and
    // answers are routed by worker index: each process's ids are its own.
    let Worker {
        io,
        _primary: (mut primary, _),
        ..
    } = worker(Duration::from_secs(1));
    let fetch = tokio::spawn(async move { io.fetch_sockets().await });
    let asked = tokio::time::timeout(Duration::from_secs(5), primary.next()).await;
    let Ok(Some(Ok(Message::FetchSockets { request, .. }))) = asked else {
        panic!("expected a fetch, got {asked:?}");
    };
    assert_eq!(request >> 32, u64::from(std::process::id()), "{request:#x}");
    fetch.abort();
}
