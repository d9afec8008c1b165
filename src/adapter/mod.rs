//! Adapters: the rooms index, and the seam through which operations reach other
//! servers (the cluster adapter plugs in here; the in-memory [`LocalAdapter`] is
//! the default and only knows this process).

mod cluster;
mod interest;
mod local;
mod recovery;
mod redis;

use std::{sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;

use crate::{engine::Frame, engine::Sid, parser::Args, server::Handshake};

pub use self::redis::{
    hash_code, stream_name, RedisAdapterError, RedisClassic, RedisClassicAdapter,
    RedisClassicConfig, RedisStreams, RedisStreamsAdapter, RedisStreamsConfig,
};
pub(crate) use self::redis::{Fed, HostReader, HostRelay, InterestFactory, Route};
pub(crate) use cluster::{direct, hints};
pub use cluster::{AlreadyAttached, ClusterAdapter, ClusterLink};
pub use interest::RoomHold;
pub use local::LocalAdapter;
pub use recovery::{PersistedSession, RecoveryConfig};

/// A socket id: per namespace, not the Engine.IO session id.
pub type SocketId = Sid;

/// Flags of a broadcast, as Node's `BroadcastFlags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadcastFlags {
    /// This server only.
    pub local: bool,
    /// Dropped for a client whose transport is not ready to write.
    pub volatile: bool,
    /// Whether the packet may be compressed (permessage-deflate on WebSocket,
    /// `httpCompression` on polling); `false` is Node's `compress(false)`, and
    /// travels with the broadcast to every worker and host.
    pub compress: bool,
}

impl Default for BroadcastFlags {
    fn default() -> Self {
        BroadcastFlags {
            local: false,
            volatile: false,
            compress: true,
        }
    }
}

/// Which sockets an operation targets: members of any of `rooms` (every socket
/// when empty), minus members of any of `except`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BroadcastOptions {
    /// Rooms whose members are reached (every socket when empty).
    pub rooms: Vec<String>,
    /// Rooms whose members are left out.
    pub except: Vec<String>,
    /// `local`, `volatile`, ….
    pub flags: BroadcastFlags,
}

/// Whether a packet sent to `rooms` (everyone when empty) minus `except` reaches
/// a socket whose rooms are `socket_rooms` (its own id room included).
pub(crate) fn reaches(rooms: &[String], except: &[String], socket_rooms: &[String]) -> bool {
    (rooms.is_empty() || rooms.iter().any(|r| socket_rooms.contains(r)))
        && !except.iter().any(|r| socket_rooms.contains(r))
}

/// An encoded packet (the Engine.IO text frame, then its binary attachments),
/// shared by every recipient.
#[derive(Debug, Clone)]
pub struct EncodedPacket(pub Arc<[Frame]>);

/// A change of this server's rooms (Node's adapter events, local only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoomEvent {
    /// The first socket joined the room.
    Create(String),
    /// The last socket left the room.
    Delete(String),
    /// A socket joined the room.
    Join(String, SocketId),
    /// A socket left the room.
    Leave(String, SocketId),
}

/// Receives [`RoomEvent`]s.
pub type RoomListener = Arc<dyn Fn(&RoomEvent) + Send + Sync>;

/// A restored session: its state, the packets it missed, and (in a cluster) the
/// last offset those packets cover.
#[derive(Debug, Clone)]
pub struct Restored {
    /// The socket's id, private id, rooms and data.
    pub session: PersistedSession,
    /// The packets it missed while away.
    pub missed: Vec<EncodedPacket>,
    /// Where `missed` ends, in the adapter's own order (a cluster's offset,
    /// the local log's position): later packets of its rooms that come before
    /// it joined them are [`Adapter::join_restored`]'s.
    pub horizon: Option<u64>,
    /// The session's rooms, held in the cluster's interest hints while it is
    /// restored (with `--redis`): drop it once the socket joined them.
    /// `None` where nothing routes by those hints.
    pub hold: Option<Arc<RoomHold>>,
}

/// What `fetch_sockets` learns of a socket on another server.
#[derive(Debug, Clone)]
pub struct SocketInfo {
    /// The socket's id.
    pub id: SocketId,
    /// Its handshake, as the other server described it (`None` when the
    /// answer carried none, or one [`Handshake::from_json`] could not read).
    pub handshake: Option<Handshake>,
    /// Its rooms (its own id room included).
    pub rooms: Vec<String>,
    /// Its `socket.data`.
    pub data: serde_json::Value,
}

/// What other servers report about a broadcast with acknowledgements.
#[derive(Debug)]
pub enum RemoteAck {
    /// Server `0` wrote the packet to this many clients.
    ClientCount(u16, u64),
    /// One client's acknowledgement.
    Ack(Args),
    /// Server `0` left the cluster: it will report nothing more.
    ServerGone(u16),
}

/// The remote side of a broadcast with acknowledgements: how many other servers
/// were asked, and their reports. Dropping it stops listening.
pub struct RemoteAcks {
    /// How many other servers were asked.
    pub servers: usize,
    /// Their reports, as they come.
    pub events: mpsc::UnboundedReceiver<RemoteAck>,
    /// Released when the emitter stops waiting.
    pub cleanup: Box<dyn Send>,
}

#[derive(Debug, Clone, thiserror::Error)]
/// Why a request to the other servers failed.
pub enum AdapterError {
    #[error("timeout reached: missing {0} responses")]
    /// Some servers did not answer in time: this many answers are missing.
    Timeout(usize),
}

/// A request to the other servers that timed out: the answers that did arrive.
#[derive(Debug, Clone, thiserror::Error)]
#[error("timeout reached: missing {missing} responses")]
pub struct PartialResponses<T: std::fmt::Debug> {
    /// How many answers did not come.
    pub missing: usize,
    /// The answers that came.
    pub responses: Vec<T>,
}

/// One namespace's view of rooms and of the other servers.
///
/// The namespace delivers to its own sockets; the `*_remote` methods carry the
/// same operation to the other servers of a cluster (no-ops for one process).
pub trait Adapter: Send + Sync + 'static {
    /// Adds socket `id` to these rooms.
    fn add_all(&self, id: SocketId, rooms: &[String]);
    /// Removes socket `id` from `room`.
    fn del(&self, id: SocketId, room: &str);
    /// Removes socket `id` from every room.
    fn del_all(&self, id: SocketId);
    /// Rooms of a local socket (its own id room included).
    fn socket_rooms(&self, id: SocketId) -> Vec<String>;
    /// Every room with at least one local member.
    fn rooms(&self) -> Vec<String>;
    /// Calls `f` once for every local socket `opts` selects.
    fn for_each_local(&self, opts: &BroadcastOptions, f: &mut dyn FnMut(SocketId));
    /// Adds a listener of room changes (create, delete, join, leave). Listeners
    /// are user code that may call back into the adapter: call them with no
    /// lock held.
    fn on_room_event(&self, listener: RoomListener);

    /// Number of servers in the cluster (this one included).
    fn server_count(&self) -> usize {
        1
    }

    /// A fresh offset for an event eligible for connection state recovery, or
    /// `None` when recovery is off.
    fn next_offset(&self) -> Option<String> {
        None
    }
    /// Keeps an encoded packet (carrying `offset`) for sessions that may recover.
    fn store_packet(&self, _offset: &str, _opts: &BroadcastOptions, _packet: &EncodedPacket) {}
    /// Keeps a packet of socket `id`'s own `emit` (carrying `offset`), as one
    /// to its own room. `written`: its connection took it, so
    /// [`Adapter::join_restored`] leaves it out for that socket, which has it
    /// (one an old handle emitted to nowhere is replayed).
    fn store_to_socket(&self, offset: &str, id: SocketId, packet: &EncodedPacket, _written: bool) {
        let opts = BroadcastOptions {
            rooms: vec![id.to_string()],
            ..Default::default()
        };
        self.store_packet(offset, &opts, packet);
    }
    /// Whether recoverable packets are numbered elsewhere (the cluster's primary):
    /// then [`Adapter::broadcast_sequenced`] sends them, and they come back to be
    /// delivered with their offset.
    fn sequenced(&self) -> bool {
        false
    }
    /// Sends a recoverable packet (encoded without its offset) to be numbered
    /// and delivered to every server, this one included.
    fn broadcast_sequenced(&self, _packet: &EncodedPacket, _opts: &BroadcastOptions) {}

    /// A recoverable socket connected or changed (rooms, data).
    fn session_update(&self, _session: &PersistedSession) {}
    /// A recoverable socket disconnected for a recoverable reason: keep its session.
    fn persist_session(&self, _session: PersistedSession) {}
    /// A recoverable socket left for good (a namespace disconnect).
    fn forget_session(&self, _pid: Sid) {}
    /// The session of `pid` and the packets it missed after `offset`, if both are known.
    fn restore_session(&self, _pid: &str, _offset: &str) -> BoxFuture<'static, Option<Restored>> {
        Box::pin(std::future::ready(None))
    }
    /// After an operation that the cluster's primary expected to join sockets to
    /// `rooms` here (a restored session, a relayed `sockets_join`), whether it
    /// did or not: the primary learns which of them this server really has.
    fn confirm_rooms(&self, _rooms: &[String]) {}
    /// Recoverable packets that reached this server after `horizon` and that a
    /// socket in `rooms` should get (they raced with its restore).
    fn missed_after(&self, _horizon: u64, _rooms: &[String]) -> Vec<EncodedPacket> {
        Vec::new()
    }
    /// Joins a restored socket to `rooms` (its own id room among them) and
    /// returns the recoverable packets of those rooms that reached this server
    /// after `horizon` (its restore) and before it joined: it gets those after
    /// `Restored::missed`, the later ones live. By default [`Adapter::add_all`],
    /// then [`Adapter::missed_after`]: right where a packet comes in later than
    /// the join (numbered elsewhere, it comes back over a link).
    fn join_restored(&self, id: SocketId, rooms: &[String], horizon: u64) -> Vec<EncodedPacket> {
        self.add_all(id, rooms);
        self.missed_after(horizon, rooms)
    }

    /// Where this server's acknowledgement ids start (servers of a cluster use
    /// disjoint ranges, since a broadcast's id reaches every server's clients).
    fn ack_id_base(&self) -> u64 {
        0
    }

    /// Sends a broadcast to the other servers (nothing for one server).
    fn broadcast_remote(&self, _packet: &EncodedPacket, _opts: &BroadcastOptions) {}
    /// Sends a broadcast that asks for acknowledgement `ack_id` to the other
    /// servers; `None` when there are none.
    fn broadcast_with_ack_remote(
        &self,
        _packet: &EncodedPacket,
        _opts: &BroadcastOptions,
        _ack_id: u64,
    ) -> Option<RemoteAcks> {
        None
    }
    /// Makes the matching sockets of the other servers join `rooms`.
    fn sockets_join_remote(&self, _opts: &BroadcastOptions, _rooms: &[String]) {}
    /// Makes the matching sockets of the other servers leave `rooms`.
    fn sockets_leave_remote(&self, _opts: &BroadcastOptions, _rooms: &[String]) {}
    /// Disconnects the matching sockets of the other servers.
    fn disconnect_sockets_remote(&self, _opts: &BroadcastOptions, _close: bool) {}
    /// The matching sockets of the other servers.
    fn fetch_sockets_remote(
        &self,
        _opts: &BroadcastOptions,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<SocketInfo>, AdapterError>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
    /// Sends an event to the other servers' `on_server_side` handlers (at once,
    /// when called) and collects one response from each; with a zero timeout
    /// nothing is awaited.
    fn server_side_emit_remote(
        &self,
        _event: &str,
        _args: &Args,
        _timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<Args>, PartialResponses<Args>>> {
        Box::pin(std::future::ready(Ok(Vec::new())))
    }
}
