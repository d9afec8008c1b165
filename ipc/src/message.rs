//! The messages exchanged between the rsio primary and its workers.
//!
//! Semantics follow `@socket.io/cluster-adapter` (see `reference/cluster-adapter.md`):
//! adapter operations are relayed by the primary to every other worker, and
//! responses are routed by the primary to the requesting worker only.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Version of the wire protocol, sent in [`Message::Hello`]. Bump it on any wire change.
pub const PROTOCOL_VERSION: u16 = 5;

/// Identifies one request of one worker; `(worker, id)` is unique cluster-wide.
pub type RequestId = u64;

/// Index of a worker (worker `i` serves `base_port + i`).
pub type WorkerIndex = u16;

/// Which sockets an operation selects on each worker (matched against that worker's own rooms).
///
/// `local` never crosses the wire: a local operation is not relayed at all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Target {
    /// Rooms whose members are selected; empty selects every socket of the namespace.
    pub rooms: Vec<String>,
    /// Rooms whose members are excluded (e.g. the sender's own id room for `socket.broadcast`).
    pub except: Vec<String>,
    /// Drop the packet for a client whose transport is not writable right now.
    pub volatile: bool,
    /// Never compress the packet (Node's `compress(false)`).
    pub uncompressed: bool,
}

/// A socket as seen from another worker (`RemoteSocket` in Node), answer to `fetchSockets`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct SocketInfo {
    /// The Socket.IO socket id.
    pub id: String,
    /// The handshake, as JSON text.
    pub handshake: Vec<u8>,
    /// The rooms the socket is in (its own id room included).
    pub rooms: Vec<String>,
    /// The application's `socket.data`, as JSON text.
    pub data: Vec<u8>,
}

/// Arguments of a server-side event or of an ack: JSON text plus binary attachments.
///
/// Encoded as raw bytes after the message header, and decoded without copying.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct EventPayload {
    /// Comma-separated JSON arguments (placeholders `{"_placeholder":true,"num":n}` for attachments).
    pub json: Bytes,
    /// Binary attachments, in placeholder order.
    pub attachments: Vec<Bytes>,
}

/// One already encoded Engine.IO frame of a broadcast packet.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Frame {
    /// A text frame; always valid UTF-8 (checked on decode).
    Text(Bytes),
    /// A binary frame (an attachment).
    Binary(Bytes),
}

impl Frame {
    /// The frame's bytes, whatever its kind.
    pub fn bytes(&self) -> &Bytes {
        match self {
            Frame::Text(b) | Frame::Binary(b) => b,
        }
    }

    /// Whether this is a binary frame.
    pub fn is_binary(&self) -> bool {
        matches!(self, Frame::Binary(_))
    }
}

/// A packet to deliver to the matching sockets of every other worker (the hot path).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Broadcast {
    /// Namespace name (e.g. `/`).
    pub nsp: String,
    /// Which sockets receive it.
    pub target: Target,
    /// Set when the emitter waits for acks: `(from, request)`. Each receiving worker then
    /// answers [`Message::BroadcastClientCount`] and [`Message::BroadcastAck`] to `from`.
    pub ack: Option<(WorkerIndex, RequestId, u64)>,
    /// Connection state recovery offset assigned by the primary (None when off / not yet assigned).
    pub offset: Option<u64>,
    /// The already encoded Engine.IO frames of the packet: text frame first, then binary
    /// attachments. Receivers write them as they are.
    pub frames: Vec<Frame>,
}

/// A recoverable socket's state, as the primary keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Session {
    /// Namespace name.
    pub nsp: String,
    /// Private id (the client's recovery credential).
    pub pid: String,
    /// Socket id, kept across the recovery.
    pub id: String,
    /// Rooms joined, the socket's own id room excluded.
    pub rooms: Vec<String>,
    /// `socket.data` as JSON text.
    pub data: Vec<u8>,
}

/// Every message that crosses the primary/worker socket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Message {
    /// Worker → primary, the first frame: protocol version, worker index and process id.
    Hello {
        /// [`PROTOCOL_VERSION`] of the sender.
        version: u16,
        /// Index of the sending worker.
        worker: WorkerIndex,
        /// Process id of the sender.
        pid: u32,
    },
    /// Worker → primary: the worker listens and serves.
    Ready,
    /// Primary → worker: stop accepting, close sessions ("server shutting down"), exit.
    Drain,
    /// Primary → worker: a new process replaces this one (a reload): stop accepting
    /// at once (new connections wait for the new process), then drain like [`Message::Drain`].
    Retire,
    /// Primary → workers: a worker died or is restarting; pending requests stop waiting for it.
    WorkerExited {
        /// The worker that is gone.
        worker: WorkerIndex,
    },
    /// Primary → workers: a worker (re)joined the cluster.
    WorkerJoined {
        /// The worker that joined.
        worker: WorkerIndex,
    },
    /// Worker → primary: live numbers for systemd `STATUS=`.
    Stats {
        /// Open client connections on the worker.
        connections: u64,
    },
    /// Either way: liveness signal on an otherwise idle connection.
    Heartbeat,
    /// Worker → primary, about once a second when metrics are on: the worker's raw
    /// numbers. The layout of `counters` and `gauges` belongs to the application
    /// (rsio's `metrics` module); counters restart at 0 with the worker.
    Metrics {
        /// Monotonic counters since the worker started.
        counters: Vec<u64>,
        /// Current values.
        gauges: Vec<u64>,
        /// Sockets per namespace name.
        namespaces: Vec<(String, u64)>,
    },
    /// Worker → primary: connection state recovery is on for `nsp`; the primary
    /// keeps sessions and packets for `max_disconnection_ms`.
    RecoveryOn {
        /// Namespace name.
        nsp: String,
        /// Node's `maxDisconnectionDuration`.
        max_disconnection_ms: u64,
    },
    /// Worker → primary: the state of a recoverable socket (sent on connect and
    /// on every change), kept by the primary so that it survives the worker.
    SessionUpdate(Session),
    /// Worker → primary: the socket of `pid` disconnected; `recoverable` keeps its
    /// session for `max_disconnection_ms`, otherwise it is forgotten.
    SessionClosed {
        /// Namespace name.
        nsp: String,
        /// Private id of the socket.
        pid: String,
        /// Whether the reason allows recovery.
        recoverable: bool,
    },
    /// Worker → primary: restore the session of `pid`, with the packets after `offset`.
    RestoreSession {
        /// The asking worker.
        from: WorkerIndex,
        /// Request id of the asking worker.
        request: RequestId,
        /// Namespace name.
        nsp: String,
        /// Private id the client sent.
        pid: String,
        /// Last offset the client received.
        offset: String,
    },
    /// Primary → worker: the answer to `RestoreSession`.
    RestoreSessionResponse {
        /// The asking worker.
        to: WorkerIndex,
        /// The request answered.
        request: RequestId,
        /// The session, if it was known and the offset still in the log.
        session: Option<Session>,
        /// Encoded frames of every missed packet, oldest first (empty without a session).
        missed: Vec<Vec<Frame>>,
        /// The last offset the primary had assigned when it answered.
        horizon: u64,
    },
    /// Worker → primary: room `room` of `nsp` appeared on the worker (its first
    /// socket joined: `present`) or left it (its last socket left). The primary
    /// relays an operation aimed at rooms only to the workers that have one of them.
    RoomInterest {
        /// Namespace name.
        nsp: String,
        /// Room name (never a socket's own id room).
        room: String,
        /// Whether the worker now has at least one socket in the room.
        present: bool,
    },
    /// Adapter: deliver a packet to matching sockets (relayed to the other
    /// workers that have one of its rooms, or to every other worker).
    Broadcast(Broadcast),
    /// Adapter: make matching sockets join `rooms` (relayed to every other worker).
    SocketsJoin {
        /// Namespace name.
        nsp: String,
        /// Which sockets join.
        target: Target,
        /// Rooms to join.
        rooms: Vec<String>,
    },
    /// Adapter: make matching sockets leave `rooms` (relayed to every other worker).
    SocketsLeave {
        /// Namespace name.
        nsp: String,
        /// Which sockets leave.
        target: Target,
        /// Rooms to leave.
        rooms: Vec<String>,
    },
    /// Adapter: disconnect matching sockets (relayed to every other worker).
    DisconnectSockets {
        /// Namespace name.
        nsp: String,
        /// Which sockets are disconnected.
        target: Target,
        /// Also close the underlying Engine.IO connection.
        close: bool,
    },
    /// Adapter: ask every other worker for its matching sockets (answered by `FetchSocketsResponse`).
    FetchSockets {
        /// The worker that sent it.
        from: WorkerIndex,
        /// Namespace name.
        nsp: String,
        /// Which sockets are described.
        target: Target,
        /// Request id of the asking worker.
        request: RequestId,
    },
    /// Adapter: run `nsp` listeners of `event` on every other worker (`serverSideEmit`).
    ServerSideEmit {
        /// The worker that sent it.
        from: WorkerIndex,
        /// Namespace name.
        nsp: String,
        /// Event name.
        event: String,
        /// Event arguments.
        payload: EventPayload,
        /// Set when the emitter waits for one `ServerSideEmitResponse` per worker.
        request: Option<RequestId>,
    },
    /// Primary → worker, with `--redis` and the streams adapter: one entry of
    /// the broadcast stream, read once per host by the primary and forwarded as
    /// Redis sent it (the worker's adapter decodes it as if it had read it).
    RedisEntry {
        /// The entry id (the recovery offset).
        id: String,
        /// The entry's fields and values, alternating (`uid`, `<uid>`, `nsp`, …).
        fields: Vec<Bytes>,
    },
    /// Primary → worker, with `--redis` and the classic adapter: one message of
    /// a broadcast or request channel (`<key>#<nsp>#…`, `<key>-request#<nsp>#`),
    /// received once per host by the primary and forwarded as Redis sent it.
    RedisMessage {
        /// The channel it was published on.
        channel: String,
        /// The message, as published.
        payload: Bytes,
    },
    /// Worker → primary, with `--redis`: `uid` is this worker's Redis identity
    /// in namespace `nsp`. The primary then receives that namespace's channels
    /// (classic adapter), and forwards the entries and messages published under
    /// `uid` to the other workers only, unless
    /// `own_entries`: the worker delivers its own broadcasts when it reads them
    /// back (streams adapter with connection state recovery: the entry id is
    /// the offset).
    RedisMember {
        /// Namespace name.
        nsp: String,
        /// The identity (`uid` of its stream entries and broadcast messages).
        uid: String,
        /// Whether the worker needs what it published itself.
        own_entries: bool,
    },
    /// Worker → primary: the sender's direct link to the process of `lane`
    /// and `epoch` reached its backlog limit: that process does not read it.
    /// Sent once per link; the primary kills that process if it still serves
    /// that lane with that epoch (never a newer one).
    LinkStuck {
        /// The lane of the process that does not read.
        lane: u32,
        /// Its epoch, as the sender's link knows it.
        epoch: u64,
    },
    /// Response to `FetchSockets`, routed by the primary to `to` only.
    FetchSocketsResponse {
        /// The worker that sent it.
        from: WorkerIndex,
        /// The requesting worker.
        to: WorkerIndex,
        /// The request answered.
        request: RequestId,
        /// The matching sockets of the answering worker.
        sockets: Vec<SocketInfo>,
    },
    /// Response to `ServerSideEmit` (the first argument of the listener's ack), routed to `to` only.
    ServerSideEmitResponse {
        /// The worker that sent it.
        from: WorkerIndex,
        /// The requesting worker.
        to: WorkerIndex,
        /// The request answered.
        request: RequestId,
        /// The ack's argument.
        payload: EventPayload,
    },
    /// How many clients a worker sent an acked broadcast to, routed to `to` only.
    BroadcastClientCount {
        /// The worker that sent it.
        from: WorkerIndex,
        /// The emitting worker.
        to: WorkerIndex,
        /// The request answered.
        request: RequestId,
        /// Number of clients the packet was written to; that many `BroadcastAck` follow.
        count: u64,
    },
    /// One client's ack of an acked broadcast (its first argument), routed to `to` only.
    BroadcastAck {
        /// The worker that sent it.
        from: WorkerIndex,
        /// The emitting worker.
        to: WorkerIndex,
        /// The request answered.
        request: RequestId,
        /// The client's ack argument.
        payload: EventPayload,
    },
    /// Either way, for operations that force rooms through the primary
    /// (`SocketsJoin`, `SocketsLeave`, `DisconnectSockets`): the primary sends
    /// it to each worker it relayed such an operation to, right after it; the
    /// worker sends it back once it has handled everything before it. When
    /// every worker reached has answered, the primary ends the force.
    Fence {
        /// Chosen by the primary, echoed by the worker.
        id: u64,
    },
    /// Worker → primary: a fence behind everything this worker sent so far.
    /// The primary sends a `Fence` to every other worker and answers
    /// `FenceDone` once each has echoed it: each has then handled every
    /// broadcast of this worker that went through the primary before it.
    FenceRequest {
        /// Chosen by the worker, given back in `FenceDone`.
        id: u64,
    },
    /// Primary → worker: the answer to its `FenceRequest` of `id`.
    FenceDone {
        /// The request's id.
        id: u64,
    },
}

impl Message {
    /// For responses, the worker the primary must route the message to; `None` for every
    /// other message (those are relayed to every other worker, or are control messages).
    pub fn is_response(&self) -> Option<WorkerIndex> {
        match self {
            Message::RestoreSessionResponse { to, .. }
            | Message::FetchSocketsResponse { to, .. }
            | Message::ServerSideEmitResponse { to, .. }
            | Message::BroadcastClientCount { to, .. }
            | Message::BroadcastAck { to, .. } => Some(*to),
            _ => None,
        }
    }

    /// Whether this is an adapter operation that the primary relays to every other worker.
    pub fn is_relayed(&self) -> bool {
        matches!(
            self,
            Message::Broadcast(_)
                | Message::SocketsJoin { .. }
                | Message::SocketsLeave { .. }
                | Message::DisconnectSockets { .. }
                | Message::FetchSockets { .. }
                | Message::ServerSideEmit { .. }
        )
    }

    /// A short name of the message kind, for logs.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Ready => "ready",
            Message::Drain => "drain",
            Message::Retire => "retire",
            Message::WorkerExited { .. } => "worker-exited",
            Message::WorkerJoined { .. } => "worker-joined",
            Message::Stats { .. } => "stats",
            Message::Heartbeat => "heartbeat",
            Message::Metrics { .. } => "metrics",
            Message::RecoveryOn { .. } => "recovery-on",
            Message::SessionUpdate(_) => "session-update",
            Message::SessionClosed { .. } => "session-closed",
            Message::RestoreSession { .. } => "restore-session",
            Message::RestoreSessionResponse { .. } => "restore-session-response",
            Message::RoomInterest { .. } => "room-interest",
            Message::Broadcast(_) => "broadcast",
            Message::SocketsJoin { .. } => "sockets-join",
            Message::SocketsLeave { .. } => "sockets-leave",
            Message::DisconnectSockets { .. } => "disconnect-sockets",
            Message::FetchSockets { .. } => "fetch-sockets",
            Message::ServerSideEmit { .. } => "server-side-emit",
            Message::FetchSocketsResponse { .. } => "fetch-sockets-response",
            Message::ServerSideEmitResponse { .. } => "server-side-emit-response",
            Message::BroadcastClientCount { .. } => "broadcast-client-count",
            Message::BroadcastAck { .. } => "broadcast-ack",
            Message::RedisEntry { .. } => "redis-entry",
            Message::RedisMessage { .. } => "redis-message",
            Message::RedisMember { .. } => "redis-member",
            Message::Fence { .. } => "fence",
            Message::FenceRequest { .. } => "fence-request",
            Message::FenceDone { .. } => "fence-done",
            Message::LinkStuck { .. } => "link-stuck",
        }
    }
}

impl From<Broadcast> for Message {
    fn from(b: Broadcast) -> Self {
        Message::Broadcast(b)
    }
}
