//! User code never runs while rsio holds a lock: every kind of callback calls
//! back into the API (rooms, join, leave, emit, broadcasts, `fetch_sockets`,
//! disconnect, namespace lookups) and the server must go on answering.
//!
//! A callback run under one of rsio's locks deadlocks the thread that runs it
//! (std locks are not re-entrant), and a deadlocked runtime thread cannot fire
//! its own timers. So each server runs on a runtime of its own thread, the
//! clients on the test's runtime, and every wait is bounded: a deadlock fails
//! the test instead of hanging it.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use futures_util::{FutureExt, SinkExt, StreamExt};
use rsio::{
    adapter::{Adapter, LocalAdapter, RoomEvent},
    parser::Args,
    server::{AckSender, ConnectError, Server, ServerConfig, Socket},
};
use tokio::runtime::Handle;
use tokio_tungstenite::tungstenite::Message;

/// Bound of every wait.
const WAIT: Duration = Duration::from_secs(5);

/// A server on a runtime of its own.
struct Running {
    io: Server,
    addr: SocketAddr,
    rt: Handle,
}

/// Starts the server `build` makes (called on the server's runtime) on a
/// loopback port.
fn start(build: impl FnOnce() -> Server + Send + 'static) -> Running {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async move {
            let io = build();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tx.send((io.clone(), addr, Handle::current())).unwrap();
            let _ = rsio::http::serve(
                listener,
                io.router(),
                rsio::http::ServeConfig::default(),
                std::future::pending::<()>(),
            )
            .await;
        });
    });
    let (io, addr, rt) = rx.recv_timeout(WAIT).expect("the server started");
    Running { io, addr, rt }
}

/// Runs `f` on a thread of its own (in the server's runtime context) and fails
/// the test if it has not returned within [`WAIT`].
fn within_sync<T: Send + 'static>(
    rt: &Handle,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let rt = rt.clone();
    std::thread::spawn(move || {
        let _guard = rt.enter();
        let _ = tx.send(f());
    });
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| panic!("{what} did not return within {WAIT:?} (deadlock)"))
}

/// A raw Socket.IO client over WebSocket.
struct Client {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    /// Frames read while looking for another one.
    unread: VecDeque<String>,
}

impl Client {
    /// Opens a connection and joins `nsp` (with `auth`, a JSON object, if given).
    async fn connect(addr: SocketAddr, nsp: &str, auth: Option<&str>) -> Client {
        let mut client = Client::open(addr).await;
        client.join(nsp, auth).await;
        client
    }

    /// Opens a connection (joins no namespace).
    async fn open(addr: SocketAddr) -> Client {
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::client_async(url, tcp))
            .await
            .expect("the WebSocket handshake within the bound")
            .unwrap();
        let mut client = Client {
            ws,
            unread: VecDeque::new(),
        };
        client
            .expect("the open packet", |f| f.starts_with("0{"))
            .await;
        client
    }

    /// Joins `nsp` (with `auth`, a JSON object, if given).
    async fn join(&mut self, nsp: &str, auth: Option<&str>) {
        let prefix = if nsp == "/" {
            "40".to_string()
        } else {
            format!("40{nsp},")
        };
        self.send(&format!("{prefix}{}", auth.unwrap_or(""))).await;
        let reply = self
            .expect("the CONNECT reply", |f| {
                f.starts_with(&prefix) || f.starts_with("44")
            })
            .await;
        assert!(reply.starts_with(&format!("{prefix}{{\"sid\"")), "{reply}");
    }

    async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next frame that `pred` accepts (others are kept for later).
    async fn expect(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        if let Some(i) = self.unread.iter().position(|f| pred(f)) {
            return self.unread.remove(i).unwrap();
        }
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let frame = self.recv().await;
                if pred(&frame) {
                    return frame;
                }
                self.unread.push_back(frame);
            }
        })
        .await;
        found.unwrap_or_else(|_| {
            panic!(
                "no {what} within {WAIT:?} (the server hangs?); got {:?}",
                self.unread
            )
        })
    }

    /// The next event `name` (in the main namespace).
    async fn event(&mut self, name: &str) -> serde_json::Value {
        let prefix = format!("42[\"{name}\"");
        let frame = self.expect(name, |f| f.starts_with(&prefix)).await;
        serde_json::from_str(&frame[2..]).unwrap()
    }

    async fn recv(&mut self) -> String {
        loop {
            let msg = self
                .ws
                .next()
                .await
                .expect("the connection is open")
                .expect("a WebSocket message");
            if let Message::Text(text) = msg {
                if text.as_str() == "2" {
                    self.ws.send(Message::text("3")).await.unwrap();
                    continue;
                }
                return text.as_str().to_owned();
            }
        }
    }
}

/// How many local sockets `fetch_sockets` finds, from a sync callback (a
/// single-server fetch completes without waiting).
fn fetch_now(ns: &rsio::server::Namespace) -> usize {
    ns.fetch_sockets()
        .now_or_never()
        .expect("a local fetch_sockets does not wait")
        .expect("a local fetch_sockets succeeds")
        .len()
}

/// `on_any_outgoing` listeners run for broadcasts, which walk the room index and
/// the socket map under their locks.
#[tokio::test]
async fn outgoing_listener_calls_back_into_the_api() {
    let server = start(|| {
        let io = Server::new(ServerConfig::default());
        io.ns("/", |socket: Socket| async move {
            socket.join("listeners");
            socket.on_any_outgoing(|s: &Socket, event: &str, _: &Args| {
                let ns = s.namespace();
                match event {
                    "news" => {
                        s.join("saw-news");
                        s.leave("listeners");
                        let rooms = s.rooms();
                        let fetched = fetch_now(ns);
                        let local = ns.sockets().len();
                        let _ = ns.to("saw-news").emit("broadcast-from-listener", &(1,));
                        let _ = s.emit("seen", &(rooms, fetched, local));
                    }
                    "kick" => s.disconnect(false),
                    _ => {}
                }
            });
            socket.on("go", |s: Socket, _: Args| async move {
                let _ = s.namespace().emit("news", &(1,));
            });
            socket.on("go-kick", |s: Socket, _: Args| async move {
                let _ = s.namespace().emit("kick", &(1,));
            });
        });
        io
    });
    let mut client = Client::connect(server.addr, "/", None).await;
    client.send(r#"42["go"]"#).await;
    let seen = client.event("seen").await;
    let rooms = seen[1].as_array().unwrap();
    assert!(rooms.iter().any(|r| r == "saw-news"), "{seen}");
    assert!(!rooms.iter().any(|r| r == "listeners"), "{seen}");
    assert_eq!((seen[2].as_u64(), seen[3].as_u64()), (Some(1), Some(1)));
    client.event("news").await;
    client.event("broadcast-from-listener").await;

    // Disconnecting from the listener, and the server still takes new clients.
    client.send(r#"42["go-kick"]"#).await;
    client.expect("the DISCONNECT", |f| f == "41").await;
    let mut other = Client::connect(server.addr, "/", None).await;
    other.send(r#"42["go"]"#).await;
    other.event("seen").await;
}

/// New-namespace listeners ran under the server's namespace map write lock.
#[tokio::test]
async fn new_namespace_listener_calls_back_into_the_api() {
    let server = start(|| {
        let io = Server::new(ServerConfig::default());
        let handle = io.clone();
        io.on_new_namespace(move |ns| {
            // Creating another namespace from here runs this listener again.
            handle.of("/made-by-listener");
            assert!(handle.namespace(ns.name()).is_some());
            let fetched = fetch_now(&handle.sockets());
            let _ = handle.emit("ns-created", &(ns.name(), fetched));
            let _ = ns.emit("hello-nobody", &(1,));
            // Clients wait for this: the very first one gets the middleware.
            ns.use_middleware(|s: Socket| async move {
                s.join("from-listener-middleware");
                Ok::<(), ConnectError>(())
            });
        });
        io.dynamic_namespace(|name, _| name.starts_with("/dyn-"))
            .on_connection(|s: Socket| async move {
                let _ = s.emit("welcome", &(s.rooms(),));
            });
        io
    });
    let mut watcher = Client::connect(server.addr, "/", None).await;

    let io = server.io.clone();
    let name = within_sync(&server.rt, "io.of(\"/static\")", move || {
        io.of("/static").name().to_string()
    });
    assert_eq!(name, "/static");
    let created = watcher.event("ns-created").await;
    let created_too = watcher.event("ns-created").await;
    let mut names = vec![created[1].clone(), created_too[1].clone()];
    names.sort_by_key(|v| v.to_string());
    assert_eq!(names, ["/made-by-listener", "/static"]);
    assert_eq!(created[2], 1, "fetch_sockets from the listener: {created}");

    // A client creates a dynamic namespace: the listener runs, and its
    // middleware applies to that very client.
    let mut dynamic = Client::connect(server.addr, "/dyn-1", None).await;
    let welcome = dynamic
        .expect("welcome", |f| f.starts_with("42/dyn-1,[\"welcome\""))
        .await;
    assert!(welcome.contains("from-listener-middleware"), "{welcome}");
    let created = watcher.event("ns-created").await;
    assert_eq!(created[1], "/dyn-1");
}

/// The adapter factory ran under the server's namespace map write lock.
#[tokio::test]
async fn adapter_factory_calls_back_into_the_api() {
    let server = start(|| {
        let cell: Arc<OnceLock<Server>> = Arc::default();
        let seen = cell.clone();
        let io = Server::with_adapter(
            ServerConfig::default(),
            Arc::new(move |name: &str| {
                if let Some(io) = seen.get() {
                    assert!(io.namespace("/").is_some());
                    let fetched = fetch_now(&io.sockets());
                    let _ = io.emit("adapter-made", &(name, fetched));
                }
                Arc::new(LocalAdapter::new(None)) as Arc<dyn Adapter>
            }),
        );
        let _ = cell.set(io.clone());
        io
    });
    let mut watcher = Client::connect(server.addr, "/", None).await;
    let io = server.io.clone();
    within_sync(&server.rt, "io.of(\"/made\")", move || {
        io.of("/made");
    });
    let made = watcher.event("adapter-made").await;
    assert_eq!(
        (made[1].as_str(), made[2].as_u64()),
        (Some("/made"), Some(1))
    );
    // The new namespace works.
    Client::connect(server.addr, "/made", None).await;
}

/// Room listeners: the own-room join of a connecting socket ran under the
/// client's lock; joins and leaves from handlers and disconnects run them too.
#[tokio::test]
async fn room_listener_calls_back_into_the_api() {
    let server = start(|| {
        let io = Server::new(ServerConfig::default());
        let ns = io.of("/");
        let (handle, nsp) = (io.clone(), ns.clone());
        ns.on_room_event(move |event| {
            let (room, id) = match event {
                RoomEvent::Join(room, id) => (room, id),
                RoomEvent::Leave(room, _) if room == "temp" => {
                    let _ = nsp.emit("left-temp", &(fetch_now(&nsp),));
                    return;
                }
                _ => return,
            };
            let Some(s) = nsp.get_socket(*id) else {
                return;
            };
            if *room == id.to_string() && s.handshake().auth()["kick"] == true {
                // Refused while it joins its own room.
                s.disconnect(false);
            } else if *room == id.to_string() {
                // A socket connecting: look at every connection's sockets.
                let sockets: usize = rsio::__private::connection_sockets(&handle).len();
                s.join("joined-in-listener");
                let rooms = s.rooms();
                let fetched = fetch_now(&nsp);
                let _ = nsp
                    .to("joined-in-listener")
                    .emit("member", &(s.id().to_string(),));
                let _ = s.emit("joined", &(rooms, sockets, fetched));
            } else if room == "kick-me" {
                s.disconnect(false);
            }
        });
        io.ns("/", |socket: Socket| async move {
            socket.on(
                "join",
                |s: Socket, room: rsio::server::Data<String>| async move {
                    s.join(room.0);
                },
            );
            socket.on(
                "leave",
                |s: Socket, room: rsio::server::Data<String>| async move {
                    s.leave(&room.0);
                },
            );
        });
        io
    });
    let mut first = Client::connect(server.addr, "/", None).await;
    let joined = first.event("joined").await;
    let rooms = joined[1].as_array().unwrap();
    assert!(rooms.iter().any(|r| r == "joined-in-listener"), "{joined}");
    assert!(joined[2].as_u64().unwrap() >= 1, "{joined}");
    assert_eq!(joined[3], 1, "{joined}");
    first.event("member").await;

    first.send(r#"42["join","temp"]"#).await;
    first.send(r#"42["leave","temp"]"#).await;
    first.event("left-temp").await;

    let mut second = Client::connect(server.addr, "/", None).await;
    second.event("joined").await;
    // The first client sees the second join its room.
    first.event("member").await;
    second.send(r#"42["join","kick-me"]"#).await;
    second.expect("the DISCONNECT", |f| f == "41").await;
    first.send(r#"42["join","temp"]"#).await;
    first.send(r#"42["leave","temp"]"#).await;
    assert_eq!(first.event("left-temp").await[1], 1);

    // Disconnected by the listener while connecting: no CONNECT reply, and
    // the connection may try again.
    let mut third = Client::open(server.addr).await;
    third.send(r#"40{"kick":true}"#).await;
    third.expect("the DISCONNECT", |f| f == "41").await;
    third.join("/", None).await;
    third.event("joined").await;
    first.send(r#"42["join","temp"]"#).await;
    first.send(r#"42["leave","temp"]"#).await;
    assert_eq!(first.event("left-temp").await[1], 2);
    // Everything sent before that broadcast has arrived: one CONNECT reply only.
    third.event("left-temp").await;
    assert!(
        !third.unread.iter().any(|f| f.starts_with("40")),
        "{:?}",
        third.unread
    );
}

/// Event handlers, acknowledgements (answering one, and the code after a
/// client's answer) and disconnect from a handler.
#[tokio::test]
async fn event_handler_and_ack_call_back_into_the_api() {
    let server = start(|| {
        let io = Server::new(ServerConfig::default());
        io.ns("/", |socket: Socket| async move {
            socket.on("work", |s: Socket, _: Args, ack: AckSender| async move {
                let ns = s.namespace().clone();
                s.join("w");
                let in_w = s.rooms().iter().any(|r| r == "w");
                s.leave("w");
                let fetched = ns.fetch_sockets().await.unwrap().len();
                let _ = ns.to(s.id()).emit("broadcast", &(in_w, fetched));
                let answer = s.timeout(WAIT).emit_with_ack("question", &(1,)).await;
                // After the client's acknowledgement.
                s.join("after-ack");
                let fetched = ns.fetch_sockets().await.unwrap().len();
                let _ = s.emit("answered", &(answer.is_ok(), s.rooms(), fetched));
                let _ = ack.send(&("done",));
            });
            socket.on("bye", |s: Socket, _: Args| async move {
                s.disconnect(false);
            });
        });
        io
    });
    let mut client = Client::connect(server.addr, "/", None).await;
    client.send(r#"421["work"]"#).await;
    let broadcast = client.event("broadcast").await;
    assert_eq!(
        (broadcast[1].as_bool(), broadcast[2].as_u64()),
        (Some(true), Some(1))
    );
    let question = client
        .expect("the question", |f| f.contains("[\"question\""))
        .await;
    let id = &question[2..question.find('[').unwrap()];
    client.send(&format!(r#"43{id}["yes"]"#)).await;
    let answered = client.event("answered").await;
    assert_eq!(answered[1], true, "{answered}");
    assert!(answered[2].to_string().contains("after-ack"), "{answered}");
    client.expect("the ack", |f| f == r#"431["done"]"#).await;
    client.send(r#"42["bye"]"#).await;
    client.expect("the DISCONNECT", |f| f == "41").await;
}

/// Catch-all incoming listeners, per-packet middlewares and error listeners.
#[tokio::test]
async fn catch_all_and_packet_middleware_call_back_into_the_api() {
    let server = start(|| {
        let io = Server::new(ServerConfig::default());
        io.ns("/", |socket: Socket| async move {
            socket.on_any(|s: &Socket, event: &str, _: &Args| {
                s.join("any");
                let rooms = s.rooms();
                s.leave("any");
                let fetched = fetch_now(s.namespace());
                let _ = s.namespace().to(s.id()).emit("any-broadcast", &(event,));
                let _ = s.emit("any-seen", &(event, rooms, fetched));
            });
            socket.use_middleware(|s: &Socket, event: &str, _: &Args| {
                s.join("middleware");
                let _ = s.emit("middleware-seen", &(event, fetch_now(s.namespace())));
                if event == "forbidden" {
                    Err("not allowed".into())
                } else {
                    Ok(())
                }
            });
            socket.on_error(|s: &Socket, message: &str| {
                let _ = s.namespace().emit("error-seen", &(message, s.rooms()));
                if message == "not allowed" {
                    s.disconnect(false);
                }
            });
            socket.on("hi", |_: Socket, _: Args| async move {});
        });
        io
    });
    let mut client = Client::connect(server.addr, "/", None).await;
    client.send(r#"42["hi"]"#).await;
    client.event("middleware-seen").await;
    let seen = client.event("any-seen").await;
    assert_eq!(seen[1], "hi");
    assert!(seen[2].to_string().contains("\"any\""), "{seen}");
    assert_eq!(seen[3], 1);
    client.event("any-broadcast").await;
    client.send(r#"42["forbidden"]"#).await;
    let error = client.event("error-seen").await;
    assert!(error[2].to_string().contains("middleware"), "{error}");
    client.expect("the DISCONNECT", |f| f == "41").await;
}

/// Namespace middlewares, connection handlers, disconnecting and disconnect
/// listeners.
#[tokio::test]
async fn connection_lifecycle_calls_back_into_the_api() {
    let server = start(|| {
        let io = Server::new(ServerConfig::default());
        let ns = io.of("/");
        ns.use_middleware(|s: Socket| async move {
            s.join("from-middleware");
            let fetched = s.namespace().fetch_sockets().await.unwrap().len();
            let _ = s.namespace().emit("middleware-ran", &(fetched,));
            Ok::<(), ConnectError>(())
        });
        ns.on_connection(|socket: Socket| async move {
            let fetched = socket.namespace().fetch_sockets().await.unwrap().len();
            socket.join("connected");
            let _ = socket.emit("welcome", &(socket.rooms(), fetched));
            socket.on_disconnecting(|s: Socket, _| {
                let rooms = s.rooms();
                s.leave("connected");
                let fetched = fetch_now(s.namespace());
                let _ = s.broadcast().emit("leaving", &(rooms, fetched));
            });
            socket.on_disconnect(|s: Socket, _| {
                let fetched = fetch_now(s.namespace());
                let _ = s.namespace().emit("left", &(s.rooms(), fetched));
                // Disconnecting again is a no-op.
                s.disconnect(true);
            });
        });
        io
    });
    let mut first = Client::connect(server.addr, "/", None).await;
    let welcome = first.event("welcome").await;
    let rooms = welcome[1].to_string();
    assert!(
        rooms.contains("from-middleware") && rooms.contains("connected"),
        "{welcome}"
    );
    assert_eq!(welcome[2], 1);
    let mut second = Client::connect(server.addr, "/", None).await;
    second.event("welcome").await;
    first.event("middleware-ran").await;

    second.send("41").await;
    let leaving = first.event("leaving").await;
    assert!(leaving[1].to_string().contains("connected"), "{leaving}");
    assert_eq!(leaving[2], 2, "{leaving}");
    let left = first.event("left").await;
    assert_eq!(
        (left[1].clone(), left[2].as_u64()),
        (serde_json::json!([]), Some(1))
    );
    // Still answering.
    Client::connect(server.addr, "/", None).await;
}

/// Dynamic namespace matchers ran under the parents' read lock.
#[tokio::test]
async fn namespace_matcher_calls_back_into_the_api() {
    let server = start(|| {
        let io = Server::new(ServerConfig::default());
        let handle = io.clone();
        let once = AtomicBool::new(false);
        io.dynamic_namespace(move |name, _| {
            if !once.swap(true, Ordering::Relaxed) {
                // Registers another parent while the list is being searched.
                handle.dynamic_namespace(|name, _| name == "/second-parent");
            }
            handle.of("/from-matcher");
            name.starts_with("/m-")
        });
        io
    });
    Client::connect(server.addr, "/m-1", None).await;
    Client::connect(server.addr, "/second-parent", None).await;
    assert!(server.io.namespace("/from-matcher").is_some());
}

/// New-namespace listeners run with the namespace already visible, so a client
/// that connects meanwhile waits for them (they may add middlewares).
#[tokio::test]
async fn clients_wait_for_new_namespace_listeners() {
    let (started_tx, started_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (started_tx, go_rx) = (Mutex::new(started_tx), Mutex::new(go_rx));
    let server = start(move || {
        let io = Server::new(ServerConfig::default());
        io.on_new_namespace(move |ns| {
            let _ = started_tx.lock().unwrap().send(());
            let _ = go_rx.lock().unwrap().recv_timeout(WAIT);
            ns.use_middleware(|s: Socket| async move {
                s.join("gated");
                Ok::<(), ConnectError>(())
            });
            ns.on_connection(|s: Socket| async move {
                let _ = s.emit("welcome", &(s.rooms(),));
            });
        });
        io
    });
    let io = server.io.clone();
    let guard = server.rt.clone();
    std::thread::spawn(move || {
        let _guard = guard.enter();
        io.of("/slow");
    });
    started_rx.recv_timeout(WAIT).expect("the listener started");
    let addr = server.addr;
    let connecting = tokio::spawn(async move { Client::connect(addr, "/slow", None).await });
    // Time for the CONNECT to reach the server while the listener still runs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    go_tx.send(()).unwrap();
    let mut client = tokio::time::timeout(WAIT, connecting)
        .await
        .expect("connected within the bound")
        .unwrap();
    let welcome = client
        .expect("welcome", |f| f.starts_with("42/slow,[\"welcome\""))
        .await;
    assert!(welcome.contains("gated"), "{welcome}");
}

/// Marks its drop with a `dropped` broadcast that also reads the socket.
struct OnDrop(Socket, &'static str);

impl Drop for OnDrop {
    fn drop(&mut self) {
        let s = &self.0;
        let ns = s.namespace();
        let _ = ns.emit("dropped", &(self.1, s.data_value(), fetch_now(ns)));
    }
}

/// What a handler captured is dropped when the handler is replaced, removed,
/// or cleared at disconnect: a capture's `Drop` is user code too.
#[tokio::test]
async fn dropping_a_handler_calls_back_into_the_api() {
    let server = start(|| {
        let io = Server::new(ServerConfig::default());
        io.ns("/", |socket: Socket| async move {
            for (event, guard) in [("a", "replaced"), ("b", "off"), ("c", "closed")] {
                let guard = OnDrop(socket.clone(), guard);
                socket.on(event, move |_: Socket, _: Args| {
                    let _ = &guard;
                    async {}
                });
            }
            socket.on("replace-a", |s: Socket, _: Args| async move {
                s.on("a", |_: Socket, _: Args| async {});
            });
            socket.on("off-b", |s: Socket, _: Args| async move {
                s.off("b");
            });
        });
        io
    });
    let mut watcher = Client::connect(server.addr, "/", None).await;
    let mut client = Client::connect(server.addr, "/", None).await;
    client.send(r#"42["replace-a"]"#).await;
    assert_eq!(watcher.event("dropped").await[1], "replaced");
    client.send(r#"42["off-b"]"#).await;
    assert_eq!(watcher.event("dropped").await[1], "off");
    client.send("41").await;
    let dropped = watcher.event("dropped").await;
    assert_eq!(
        (dropped[1].as_str(), dropped[3].as_u64()),
        (Some("closed"), Some(1))
    );
}
