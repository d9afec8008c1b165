//! The Redis Streams adapter, wire-compatible with Node's
//! `@socket.io/redis-streams-adapter` 0.3.1: rsio and Node servers on one Redis
//! share rooms, broadcasts, requests and recoverable sessions.
//!
//! Durable messages (broadcasts without acks, sockets join/leave/disconnect) are
//! `XADD`ed to the namespace's stream and read back with `XREAD BLOCK`; requests
//! and responses go over PUB/SUB (`<prefix>#<nsp>#` and `<prefix>#<nsp>#<uid>#`).
//! With connection state recovery on, the stream entry id is the offset: a
//! recoverable packet is delivered by every server, this one included, when the
//! reader sees its entry, so every client gets the same offset in stream order.
//!
//! ```no_run
//! # use rsio::{adapter::{RedisStreams, RedisStreamsConfig}, server::{Server, ServerConfig}};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let redis = RedisStreams::new("redis://127.0.0.1:6379", RedisStreamsConfig::default())?;
//! let io = Server::with_adapter(ServerConfig::default(), redis.factory());
//! redis.attach(&io);
//! # Ok(()) }
//! ```

mod adapter;
mod classic;
mod codec;
mod conn;
mod dispatch;
mod host;
mod link;
mod replay;
mod requests;
mod session;
mod unconfirmed;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, OnceLock, RwLock, Weak,
    },
    time::Duration,
};

use tokio::sync::mpsc;

use super::{
    local::InterestSink, EncodedPacket, LocalAdapter, RecoveryConfig, RemoteAck, SocketInfo,
};
use crate::{
    parser::Args,
    server::{AdapterFactory, Server, ServerInnerRef},
};

use codec::CodecError;
use conn::StreamReader;
use link::{Link, Member, Sub};
use replay::Replay;
use requests::Requests;

pub use adapter::RedisStreamsAdapter;
pub use classic::{RedisClassic, RedisClassicAdapter, RedisClassicConfig};
pub(crate) use codec::Route;
pub use codec::{hash_code, stream_name};
pub(crate) use host::{Fed, HostReader};

/// Options of the adapter, with the names and defaults of Node's `createAdapter` options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisStreamsConfig {
    /// `streamName`: the stream (or the prefix of the streams).
    pub stream_name: String,
    /// `streamCount`: namespaces are spread over this many streams by hash.
    pub stream_count: usize,
    /// `channelPrefix`: of the PUB/SUB channels.
    pub channel_prefix: String,
    /// `maxLen`: `XADD … MAXLEN ~ max_len`.
    pub max_len: usize,
    /// `readCount`: `XREAD COUNT`.
    pub read_count: usize,
    /// `blockTimeInMs`: `XREAD BLOCK`. A reader without an answer 3 s past it
    /// takes its connection for dead and reconnects.
    pub block_time: Duration,
    /// `sessionKeyPrefix`: keys of recoverable sessions.
    pub session_key_prefix: String,
}

impl Default for RedisStreamsConfig {
    fn default() -> Self {
        RedisStreamsConfig {
            stream_name: "socket.io".into(),
            stream_count: 1,
            channel_prefix: "socket.io".into(),
            max_len: 10_000,
            read_count: 100,
            block_time: Duration::from_millis(5000),
            session_key_prefix: "sio:session:".into(),
        }
    }
}

/// Why the adapter could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RedisAdapterError {
    /// A URL (or the cluster client's options) could not be used.
    #[error("invalid redis url: {0}")]
    /// The Redis URL does not parse.
    Url(#[source] redis::RedisError),
    /// [`RedisClassic::cluster`] was given no node.
    #[error("no redis cluster node given")]
    NoNodes,
}

/// Tells a member's host the name and uid of each of its namespaces (see `set_fed`).
pub(crate) type Announce = Box<dyn Fn(&str, &str) + Send + Sync>;

/// Makes the room-interest sink of a namespace's local rooms (see
/// `set_room_interest`): a host's worker counts its rooms in the interest
/// hints, so that its primary forwards it only the room broadcasts it has
/// members for.
pub(crate) type InterestFactory = Box<dyn Fn(&str) -> Option<InterestSink> + Send + Sync>;

/// The local rooms of namespace `nsp`, reporting to `interest` when set.
fn local_rooms(interest: &OnceLock<InterestFactory>, nsp: &str) -> LocalAdapter {
    match interest.get().and_then(|make| make(nsp)) {
        Some(sink) => LocalAdapter::with_interest(sink),
        None => LocalAdapter::new(None),
    }
}

/// Hands a broadcast of namespace `nsp` to the other workers of the member's
/// host, each delivering it to its own clients (no ack, no offset). With
/// `--redis`, the primary's relay: for a broadcast whose write Redis never
/// got, so that one host does not split into one chat per worker while Redis
/// is unreachable (see `set_host_relay`).
pub(crate) type HostRelay =
    Arc<dyn Fn(&str, &EncodedPacket, &super::BroadcastOptions) + Send + Sync>;

/// What to do when the write of a broadcast fails (`on_fail`), for a member
/// whose host relays: one Redis never got goes to the host's other workers
/// through `relay`; one whose outcome is unknown does not, as Redis may have
/// taken it, and then the host's reader forwards its entry once Redis is back
/// (relayed too, it would be delivered twice).
///
/// The namespace's name is `name(&ns)`: `ns` is shared, not its name copied.
fn relay_if_not_sent<N: Send + 'static>(
    relay: &HostRelay,
    ns: N,
    name: fn(&N) -> &str,
    packet: &EncodedPacket,
    opts: &super::BroadcastOptions,
) -> link::OnFail {
    let (relay, packet, opts) = (relay.clone(), packet.clone(), opts.clone());
    Box::new(move |failure: link::Failure, _: &redis::Cmd| {
        if failure == link::Failure::NotSent {
            relay(name(&ns), &packet, &opts);
        }
    })
}

/// One namespace's identity on Redis.
pub(crate) struct NsState {
    nsp: String,
    /// 8 random bytes in hex, as Node's `randomId()`.
    uid: String,
    stream: String,
    public: String,
    servers: AtomicUsize,
    replay: Mutex<Replay>,
}

impl NsState {
    fn private_channel(&self, prefix: &str, uid: &str) -> String {
        format!("{prefix}#{}#{uid}#", self.nsp)
    }

    fn replay(&self) -> MutexGuard<'_, Replay> {
        self.replay.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Where the answers to one of this server's requests go.
enum Pending {
    Fetch(mpsc::UnboundedSender<Vec<SocketInfo>>),
    ServerSide(mpsc::UnboundedSender<Args>),
    Broadcast(mpsc::UnboundedSender<RemoteAck>),
}

/// One server's membership of a Redis Streams cluster, shared by the adapters
/// of all its namespaces: one command connection, one subscriber connection,
/// one `XREAD` connection per stream.
pub struct RedisStreams {
    config: RedisStreamsConfig,
    link: Link,
    namespaces: RwLock<HashMap<String, Arc<NsState>>>,
    pending: Requests<Pending>,
    server: OnceLock<ServerInnerRef>,
    recovery: OnceLock<RecoveryConfig>,
    /// Set when its host's primary reads the streams and forwards the entries
    /// ([`RedisStreams::on_fed_entry`]): no reader of its own. Told each
    /// namespace's uid.
    fed: OnceLock<Announce>,
    /// Set when its host's primary routes the entries by room interest.
    interest: OnceLock<InterestFactory>,
    /// Broadcasts delivered here because their `XADD` failed, maybe after Redis ran it.
    unconfirmed: unconfirmed::Unconfirmed,
    /// Set when the workers of its host share the broadcasts Redis did not get.
    host_relay: OnceLock<HostRelay>,
    /// Itself, for the tasks it spawns.
    this: Weak<RedisStreams>,
}

impl RedisStreams {
    /// A member for the Redis at `url` (`redis://host:port[/db]`); nothing is
    /// connected until [`RedisStreams::attach`].
    pub fn new(
        url: &str,
        config: RedisStreamsConfig,
    ) -> Result<Arc<RedisStreams>, RedisAdapterError> {
        let link = Link::single(url)?;
        Ok(Arc::new_cyclic(|this| RedisStreams {
            config,
            link,
            namespaces: RwLock::default(),
            pending: Requests::default(),
            server: OnceLock::new(),
            recovery: OnceLock::new(),
            fed: OnceLock::new(),
            interest: OnceLock::new(),
            unconfirmed: unconfirmed::Unconfirmed::default(),
            host_relay: OnceLock::new(),
            this: this.clone(),
        }))
    }

    /// The options this member runs with.
    pub fn config(&self) -> &RedisStreamsConfig {
        &self.config
    }

    /// The adapter factory to build the server with ([`Server::with_adapter`]).
    pub fn factory(self: &Arc<Self>) -> AdapterFactory {
        let node = self.clone();
        Arc::new(move |nsp: &str| node.adapter(nsp) as Arc<dyn super::Adapter>)
    }

    /// The adapter of namespace `nsp` (registers it: its channels are subscribed).
    pub fn adapter(self: &Arc<Self>, nsp: &str) -> Arc<RedisStreamsAdapter> {
        let state = self.register(nsp);
        Arc::new(RedisStreamsAdapter {
            local: local_rooms(&self.interest, nsp),
            ns: state,
            node: Arc::downgrade(self),
        })
    }

    fn register(&self, nsp: &str) -> Arc<NsState> {
        let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get(nsp) {
            return s.clone();
        }

        let prefix = &self.config.channel_prefix;
        let uid = random_id();
        let state = Arc::new(NsState {
            nsp: nsp.to_string(),
            stream: stream_name(&self.config.stream_name, self.config.stream_count, nsp),
            public: format!("{prefix}#{nsp}#"),
            servers: AtomicUsize::new(1),
            replay: Mutex::default(),
            uid,
        });
        self.link.subscribe(Sub::Channel(state.public.clone()));
        self.link
            .subscribe(Sub::Channel(state.private_channel(prefix, &state.uid)));
        map.insert(nsp.to_string(), state.clone());
        drop(map);
        if let Some(announce) = self.fed.get() {
            announce(&state.nsp, &state.uid);
        }
        state
    }

    /// Starts the connections (on the current tokio runtime) and delivers what
    /// other servers send to `server`'s namespaces. Redis being unreachable is
    /// logged and retried with backoff; the server keeps serving its own clients.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn attach(self: &Arc<Self>, server: &Server) {
        let _ = self.server.set(server.inner_ref());
        if let Some(r) = server.config().connection_state_recovery {
            let _ = self.recovery.set(r);
        }
        let member: Weak<dyn Member> = self.this.clone();
        if self.link.start(member) && !self.is_fed() {
            conn::spawn_readers(self);
        }
    }

    /// Reads no stream itself: its host's primary reads them once for all its
    /// workers and hands each entry to [`RedisStreams::on_fed_entry`];
    /// `announce` is told the name and uid of each namespace (so that the
    /// primary knows whose entries are whose). Call it before any adapter is made.
    pub(crate) fn set_fed(&self, announce: Announce) {
        let _ = self.fed.set(announce);
    }

    /// Each namespace's rooms appearing and disappearing here are told to the
    /// sink `interest` makes for it (the host's interest hints). Call it
    /// before any adapter is made.
    pub(crate) fn set_room_interest(&self, interest: InterestFactory) {
        let _ = self.interest.set(interest);
    }

    fn is_fed(&self) -> bool {
        self.fed.get().is_some()
    }

    /// A broadcast whose `XADD` was never sent (Redis unreachable) is also
    /// handed to `relay`: the other workers of its host deliver it to their
    /// clients, without an offset. One whose outcome is unknown is not (see
    /// `unconfirmed`). Nothing else changes while Redis takes the writes.
    pub(crate) fn set_host_relay(&self, relay: HostRelay) {
        let _ = self.host_relay.set(relay);
    }

    /// An entry its host's primary read (`fields` alternate names and values),
    /// handled as if this server had read it.
    pub(crate) fn on_fed_entry(&self, id: &str, fields: &[bytes::Bytes]) {
        let pairs: Vec<(&[u8], &[u8])> = fields
            .chunks_exact(2)
            .map(|kv| (kv[0].as_ref(), kv[1].as_ref()))
            .collect();
        // The stream is not forwarded: entries are matched on any stream.
        if self.delivered_when_its_write_failed(None, &pairs, id) {
            return;
        }
        if let Err(err) = self.handle_entry(&pairs, id) {
            tracing::warn!(target: "socket.io:redis", id, "invalid stream entry skipped: {err}")
        }
    }

    /// Whether the entry `id` read from `stream` (any stream when `None`) is a
    /// broadcast this server delivered itself when its `XADD` failed with the
    /// outcome unknown (see `unconfirmed`): it is then skipped, once.
    fn delivered_when_its_write_failed(
        &self,
        stream: Option<&str>,
        fields: &[(&[u8], &[u8])],
        id: &str,
    ) -> bool {
        if self.unconfirmed.is_empty() || !self.unconfirmed.take(stream, id, fields) {
            return false;
        }
        tracing::debug!(target: "socket.io:redis", stream, id, "delivered here when its write failed");
        true
    }

    /// Waits until the subscriber and every stream reader have connected once
    /// (or `timeout`); whether they did.
    pub async fn ready(&self, timeout: Duration) -> bool {
        let readers = if self.is_fed() {
            0
        } else {
            self.streams().len()
        };
        self.link.ready(1 + readers, timeout).await
    }

    fn namespace_state(&self, nsp: &str) -> Option<Arc<NsState>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(nsp)
            .cloned()
    }

    fn states(&self) -> Vec<Arc<NsState>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Every stream a namespace may write to. Node reads `name-0` to
    /// `name-<count-1>` only, yet a negative hash writes to `name--<i>` (JS `%`):
    /// those are read too, or recoverable packets of such a namespace would
    /// never come back to be delivered.
    fn streams(&self) -> Vec<String> {
        streams_of(&self.config)
    }

    /// Queues a command; `on_fail` runs if Redis cannot be reached for it.
    fn send(&self, cmd: redis::Cmd, on_fail: Option<link::OnFail>) {
        self.link.send(cmd, on_fail);
    }

    /// `XADD <stream> MAXLEN ~ <maxLen> * uid … nsp … type … [data …]`.
    fn xadd(&self, ns: &NsState, kind: u8, data: Option<String>, on_fail: Option<link::OnFail>) {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(&ns.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.config.max_len)
            .arg("*")
            .arg("uid")
            .arg(&ns.uid)
            .arg("nsp")
            .arg(&ns.nsp)
            .arg("type")
            .arg(kind.to_string());
        if let Some(d) = data {
            cmd.arg("data").arg(d);
        }
        self.send(cmd, on_fail);
    }

    /// `PUBLISH <channel> msgpack(message)`.
    fn publish(&self, channel: &str, message: &codec::Message) {
        self.link.publish(channel, codec::pubsub_payload(message));
    }
}

impl Member for RedisStreams {
    fn link(&self) -> &Link {
        &self.link
    }

    fn on_pubsub(&self, channel: &str, payload: &[u8]) {
        match codec::parse_pubsub(payload) {
            Ok(m) => self.on_message(m, None),
            Err(err) => {
                tracing::debug!(target: "socket.io:redis", channel, "invalid message: {err}")
            }
        }
    }

    fn counted_channels(&self) -> Vec<String> {
        self.states().iter().map(|s| s.public.clone()).collect()
    }

    fn set_counts(&self, counts: &HashMap<String, usize>) {
        for s in self.states() {
            if let Some(n) = counts.get(&s.public) {
                s.servers.store((*n).max(1), Ordering::Relaxed);
            }
        }
    }

    /// Bounds the search for the entries of writes cut off (see `unconfirmed`).
    fn after_unknown_failure<'a>(&'a self, conn: &'a mut link::Conn) -> redis::RedisFuture<'a, ()> {
        Box::pin(async move {
            for stream in self.unconfirmed.unbounded_streams() {
                let last = conn::last_id(conn, stream.as_bytes()).await?;
                self.unconfirmed
                    .bound(&stream, codec::parse_entry_id(&last).unwrap_or((0, 0)));
            }
            Ok(())
        })
    }
}

impl StreamReader for RedisStreams {
    fn link(&self) -> &Link {
        &self.link
    }

    fn config(&self) -> &RedisStreamsConfig {
        &self.config
    }

    fn on_entry(
        &self,
        stream: &str,
        fields: &[(&[u8], &[u8])],
        id: &str,
    ) -> Result<(), CodecError> {
        if self.delivered_when_its_write_failed(Some(stream), fields, id) {
            return Ok(());
        }
        self.handle_entry(fields, id)
    }
}

/// Every stream of `config` (see [`RedisStreams::streams`]).
fn streams_of(c: &RedisStreamsConfig) -> Vec<String> {
    if c.stream_count <= 1 {
        return vec![c.stream_name.clone()];
    }
    let n = c.stream_count as i64;
    (1 - n..n)
        .map(|i| format!("{}-{i}", c.stream_name))
        .collect()
}

/// 8 random bytes in hex (Node's `randomBytes(8).toString("hex")`).
fn random_id() -> String {
    requests::random_hex(8)
}

/// The [`crate::adapter::Adapter`] methods that are the [`LocalAdapter`]'s
/// (rooms of this server), for an adapter whose field `local` holds it.
macro_rules! delegate_local {
    ($($field:ident).+) => {
        fn add_all(&self, id: $crate::adapter::SocketId, rooms: &[String]) {
            self.$($field).+.add_all(id, rooms)
        }

        fn del(&self, id: $crate::adapter::SocketId, room: &str) {
            self.$($field).+.del(id, room)
        }

        fn del_all(&self, id: $crate::adapter::SocketId) {
            self.$($field).+.del_all(id)
        }

        fn socket_rooms(&self, id: $crate::adapter::SocketId) -> Vec<String> {
            self.$($field).+.socket_rooms(id)
        }

        fn rooms(&self) -> Vec<String> {
            self.$($field).+.rooms()
        }

        fn for_each_local(
            &self,
            opts: &$crate::adapter::BroadcastOptions,
            f: &mut dyn FnMut($crate::adapter::SocketId),
        ) {
            self.$($field).+.for_each_local(opts, f)
        }

        fn on_room_event(&self, listener: $crate::adapter::RoomListener) {
            self.$($field).+.on_room_event(listener)
        }
    };
}
use delegate_local;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_namespace_stream_is_read() {
        let config = RedisStreamsConfig {
            stream_count: 4,
            ..Default::default()
        };
        let node = RedisStreams::new("redis://127.0.0.1:1", config).unwrap();
        let streams = node.streams();
        assert_eq!(streams.len(), 7);
        for nsp in ["/", "/notifications", "/admin", "/chat", "/ä€😀"] {
            let s = stream_name("socket.io", 4, nsp);
            assert!(streams.contains(&s), "{nsp} writes to {s}, not read");
        }
        let one = RedisStreams::new("redis://127.0.0.1:1", RedisStreamsConfig::default()).unwrap();
        assert_eq!(one.streams(), vec!["socket.io".to_string()]);
    }

    #[test]
    fn ids_are_16_hex_digits() {
        let id = random_id();
        assert_eq!(id.len(), 16);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(id, random_id());
    }
}
