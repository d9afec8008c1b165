//! Connection state recovery with the in-process adapter while the namespace
//! middlewares run: a recovered socket gets every recoverable packet of its
//! rooms stored after its offset exactly once and in order, the ones broadcast
//! while a slow middleware waits included; a refused one gets none and is in
//! no room; with `skip_middlewares` the middlewares do not run at all.
//!
//! Server and raw WebSocket client share the test's runtime; the middleware
//! waits on a gate the test opens, so "during the middleware" is exact.

mod inproc;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use inproc::Client;
use rsio::{
    adapter::RoomEvent,
    server::{ConnectError, Server, Socket},
    RecoveryConfig,
};
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

/// Bound of every wait.
const WAIT: Duration = Duration::from_secs(5);

/// What the middleware does with a recovered socket.
#[derive(Default)]
struct Gate {
    /// Opened by the test: the middleware then returns.
    open: Notify,
    /// Refuse the recovered socket once the gate opens.
    refuse: AtomicBool,
    /// The middleware has run (with `skip_middlewares` it must not).
    ran: AtomicBool,
}

/// A server and what the test observes of it.
struct Running {
    io: Server,
    addr: SocketAddr,
    gate: Arc<Gate>,
    /// A recovered socket entered the middleware.
    waiting: mpsc::UnboundedReceiver<()>,
    /// `(id, recovered)` of each connection handler run.
    connected: mpsc::UnboundedReceiver<(String, bool)>,
    /// The socket the connection handler ran for last.
    last: Arc<Mutex<Option<Socket>>>,
    /// Ids of the sockets that disconnected.
    disconnected: mpsc::UnboundedReceiver<String>,
}

/// A server with recovery on; its main namespace joins a new socket to room
/// `r`. Its middleware holds a recovered socket until the gate opens (after
/// emitting `mw` to it straight, a packet it must get once).
async fn start(skip_middlewares: bool) -> Running {
    let mut recovery = RecoveryConfig::default();
    recovery.max_disconnection_duration = Duration::from_secs(5);
    recovery.skip_middlewares = skip_middlewares;
    let io = Server::builder()
        .connection_state_recovery(recovery)
        .build();
    let gate = Arc::new(Gate::default());
    let (waiting_tx, waiting) = mpsc::unbounded_channel();
    let (connected_tx, connected) = mpsc::unbounded_channel();
    let (disconnected_tx, disconnected) = mpsc::unbounded_channel();
    let last = Arc::new(Mutex::new(None));
    let ns = io.of("/");
    let middleware_gate = gate.clone();
    ns.use_middleware(move |socket: Socket| {
        let (gate, waiting) = (middleware_gate.clone(), waiting_tx.clone());
        async move {
            if !socket.recovered() {
                return Ok(());
            }
            gate.ran.store(true, Ordering::SeqCst);
            if !gate.refuse.load(Ordering::SeqCst) {
                let _ = socket.emit("mw", &("straight",));
            }
            let _ = waiting.send(());
            gate.open.notified().await;
            match gate.refuse.load(Ordering::SeqCst) {
                true => Err(ConnectError::new("refused")),
                false => Ok(()),
            }
        }
    });
    let handler_last = last.clone();
    io.ns("/", move |socket: Socket| {
        let (connected, disconnected) = (connected_tx.clone(), disconnected_tx.clone());
        *handler_last.lock().unwrap() = Some(socket.clone());
        async move {
            if !socket.recovered() {
                socket.join("r");
            }
            socket.on_disconnect(move |s: Socket, _| {
                let _ = disconnected.send(s.id().to_string());
            });
            let _ = connected.send((socket.id().to_string(), socket.recovered()));
        }
    });
    let addr = inproc::serve(io.router()).await;
    Running {
        io,
        addr,
        gate,
        waiting,
        connected,
        last,
        disconnected,
    }
}

/// The next value on `rx`, within the bound.
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>, what: &str) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no {what} within {WAIT:?}"))
        .expect("the server is running")
}

/// The next frame but pings (answered).
async fn recv(c: &mut Client) -> String {
    c.recv().await.expect("a frame, the connection open")
}

/// Frames up to the event `end` (included), read as [`Seen`].
async fn until_end(c: &mut Client) -> Vec<Seen> {
    let mut seen = Vec::new();
    loop {
        let frame = Seen::read(&recv(c).await);
        let end = matches!(&frame, Seen::Event(name, _) if name == "end");
        seen.push(frame);
        if end {
            return seen;
        }
    }
}

/// A frame as the tests compare it.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    /// CONNECT reply: `sid`, `pid`.
    Connect(String, String),
    /// CONNECT_ERROR: its message.
    ConnectError(String),
    /// An event: name and arguments, the offset recovery appends left out.
    Event(String, Vec<Value>),
}

impl Seen {
    fn read(frame: &str) -> Seen {
        if let Some(json) = frame.strip_prefix("40") {
            let v: Value = serde_json::from_str(json).unwrap();
            let field = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            return Seen::Connect(field("sid"), field("pid"));
        }
        if let Some(json) = frame.strip_prefix("44") {
            let v: Value = serde_json::from_str(json).unwrap();
            return Seen::ConnectError(v["message"].as_str().unwrap().to_string());
        }
        let json = frame
            .strip_prefix("42")
            .unwrap_or_else(|| panic!("unexpected frame {frame:?}"));
        let mut args: Vec<Value> = serde_json::from_str(json).unwrap();
        let name = args.remove(0).as_str().unwrap().to_string();
        // Every event carries its offset last under recovery.
        assert!(args.pop().is_some_and(|o| o.is_string()), "{frame}");
        Seen::Event(name, args)
    }
}

fn event(name: &str, arg: Value) -> Seen {
    Seen::Event(name.into(), vec![arg])
}

/// A client in room `r` that got event 1 (so it has an offset), then lost
/// its transport; event 2 is broadcast to `r` while it is away. Returns its
/// id, pid and offset.
async fn joined_then_dropped(t: &mut Running) -> (String, String, String) {
    let mut a = Client::open(t.addr, "/socket.io/").await;
    a.send("40").await;
    let Seen::Connect(sid, pid) = Seen::read(&recv(&mut a).await) else {
        panic!("no CONNECT reply");
    };
    assert_eq!(
        next(&mut t.connected, "connection").await,
        (sid.clone(), false)
    );
    t.io.to("r").emit("m", &(1,)).unwrap();
    let frame = recv(&mut a).await;
    let args: Vec<Value> = serde_json::from_str(&frame[2..]).unwrap();
    assert_eq!(args[..2], [Value::from("m"), Value::from(1)], "{frame}");
    let offset = args[2].as_str().unwrap().to_string();
    // A transport close keeps the session.
    drop(a);
    assert_eq!(next(&mut t.disconnected, "disconnect").await, sid);
    t.io.to("r").emit("m", &(2,)).unwrap();
    (sid, pid, offset)
}

/// Packet 3, broadcast to `r` while the recovered socket's middleware waits,
/// was neither in what the restore read nor delivered live: it was lost.
#[tokio::test]
async fn broadcasts_during_a_slow_middleware_reach_the_recovered_socket() {
    let mut t = start(false).await;
    let (sid, pid, offset) = joined_then_dropped(&mut t).await;
    let gone = t.last.lock().unwrap().take().unwrap();
    let mut a = Client::open(t.addr, "/socket.io/").await;
    a.send(&format!(r#"40{{"pid":"{pid}","offset":"{offset}"}}"#))
        .await;
    next(&mut t.waiting, "the middleware").await;
    t.io.to("r").emit("m", &(3,)).unwrap();
    // The socket it was before (a handle user code kept) writes nowhere, but
    // what it emits is for the client all the same.
    assert!(gone.emit("m", &("stale",)).is_err());
    t.io.to("elsewhere").emit("m", &("not for a",)).unwrap();
    t.io.except("r").emit("m", &("not for a",)).unwrap();
    t.gate.open.notify_one();
    assert_eq!(
        next(&mut t.connected, "connection").await,
        (sid.clone(), true)
    );
    t.io.to("r").emit("m", &(4,)).unwrap();
    t.io.to("r").emit("end", &(0,)).unwrap();
    // The middleware's own emit went out at once, before the CONNECT reply.
    assert_eq!(
        until_end(&mut a).await,
        [
            event("mw", "straight".into()),
            Seen::Connect(sid.clone(), pid),
            event("m", 2.into()),
            event("m", 3.into()),
            event("m", "stale".into()),
            event("m", 4.into()),
            event("end", 0.into()),
        ]
    );
    assert_eq!(t.io.of("/").sockets()[0].rooms(), [sid, "r".to_string()]);
}

/// Refused after packet 3 was broadcast: nothing of the session reaches the
/// client, and the socket is in none of its rooms.
#[tokio::test]
async fn a_refused_recovered_socket_gets_nothing_and_joins_no_room() {
    let mut t = start(false).await;
    let (sid, pid, offset) = joined_then_dropped(&mut t).await;
    t.gate.refuse.store(true, Ordering::SeqCst);
    let mut a = Client::open(t.addr, "/socket.io/").await;
    a.send(&format!(r#"40{{"pid":"{pid}","offset":"{offset}"}}"#))
        .await;
    next(&mut t.waiting, "the middleware").await;
    t.io.to("r").emit("m", &(3,)).unwrap();
    t.gate.open.notify_one();
    assert_eq!(
        Seen::read(&recv(&mut a).await),
        Seen::ConnectError("refused".into())
    );
    let adapter = t.io.of("/").adapter().clone();
    let id = rsio::engine::Sid::parse(&sid).unwrap();
    assert_eq!(adapter.socket_rooms(id), Vec::<String>::new());
    assert_eq!(adapter.rooms(), Vec::<String>::new());
    t.io.to("r").emit("m", &(4,)).unwrap();
    // The connection may join again, as a new socket.
    a.send("40").await;
    let (new_id, recovered) = next(&mut t.connected, "connection").await;
    assert!(!recovered && new_id != sid);
    t.io.to("r").emit("end", &(0,)).unwrap();
    let seen = until_end(&mut a).await;
    assert!(
        matches!(&seen[..], [Seen::Connect(s, p), last] if *s == new_id && *p != pid && *last == event("end", 0.into())),
        "{seen:?}"
    );
}

/// With `skip_middlewares` the middleware never runs; a room listener that
/// broadcasts to `r` as the recovered socket joins it reaches it once (live:
/// it is not replayed from the log too).
#[tokio::test]
async fn skipping_middlewares_recovers_at_once_and_once() {
    let mut t = start(true).await;
    let ns = t.io.of("/");
    let nsp = ns.clone();
    ns.on_room_event(move |event| {
        if let RoomEvent::Join(room, id) = event {
            let recovered = nsp.get_socket(*id).is_some_and(|s| s.recovered());
            if room == "r" && recovered {
                let _ = nsp.to("r").emit("m", &("listener",));
            }
        }
    });
    let (sid, pid, offset) = joined_then_dropped(&mut t).await;
    let mut a = Client::open(t.addr, "/socket.io/").await;
    a.send(&format!(r#"40{{"pid":"{pid}","offset":"{offset}"}}"#))
        .await;
    assert_eq!(
        next(&mut t.connected, "connection").await,
        (sid.clone(), true)
    );
    t.io.to("r").emit("m", &(4,)).unwrap();
    t.io.to("r").emit("end", &(0,)).unwrap();
    let mut seen = until_end(&mut a).await;
    assert!(!t.gate.ran.load(Ordering::SeqCst), "the middleware ran");
    assert!(t.waiting.try_recv().is_err());
    // Sent live while it joins, so before its CONNECT reply; once.
    let listener = event("m", "listener".into());
    assert_eq!(
        seen.iter().filter(|s| **s == listener).count(),
        1,
        "{seen:?}"
    );
    seen.retain(|s| *s != listener);
    assert_eq!(
        seen,
        [
            Seen::Connect(sid, pid),
            event("m", 2.into()),
            event("m", 4.into()),
            event("end", 0.into()),
        ]
    );
}
