//! The classic Redis adapter, wire-compatible with Node's
//! `@socket.io/redis-adapter` 8.3: see [`RedisClassic`].

mod adapter;
mod codec;
mod dispatch;

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock, RwLock, Weak,
    },
    time::Duration,
};

use tokio::sync::mpsc;

use super::{
    link::{Link, Member, Sub},
    local_rooms,
    requests::Requests,
    Announce, HostRelay, InterestFactory, RedisAdapterError,
};
use crate::{
    adapter::{LocalAdapter, RemoteAck, SocketInfo},
    parser::Args,
    server::{AdapterFactory, Server, ServerInnerRef},
};

pub use adapter::RedisClassicAdapter;
pub(super) use codec::message_route;

/// Options of the adapter, with the names and defaults of Node's `createAdapter`
/// options (`requestsTimeout` has no counterpart: rsio's `fetch_sockets` and
/// `server_side_emit` take their timeouts per call).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisClassicConfig {
    /// `key`: the prefix of the channels.
    pub key: String,
    /// `publishOnSpecificResponseChannel`: answers go to
    /// `<key>-response#<nsp>#<uid>#` of the requester instead of the shared
    /// response channel (every server must use the same setting).
    pub publish_on_specific_response_channel: bool,
}

impl Default for RedisClassicConfig {
    fn default() -> Self {
        RedisClassicConfig {
            key: "socket.io".into(),
            publish_on_specific_response_channel: false,
        }
    }
}

/// One namespace's identity and rooms on this server.
pub(crate) struct ClassicNs {
    nsp: String,
    /// 8 random bytes in hex (Node: `uid2(6)`; only uniqueness matters).
    uid: String,
    /// `<key>#<nsp>#`: broadcasts, and the prefix of the room channels.
    channel: String,
    request_channel: String,
    response_channel: String,
    /// `<key>-response#<nsp>#<uid>#`.
    specific_channel: String,
    servers: AtomicUsize,
    local: LocalAdapter,
}

/// Where the answers to one of this server's requests go.
enum Pending {
    Fetch(mpsc::UnboundedSender<Vec<SocketInfo>>),
    ServerSide(mpsc::UnboundedSender<Args>),
    Broadcast(mpsc::UnboundedSender<RemoteAck>),
}

/// The classic Redis adapter, wire-compatible with Node's
/// `@socket.io/redis-adapter` 8.3 (and the `@socket.io/redis-emitter`, whose
/// messages carry the uid `"emitter"`): rsio and Node servers on one Redis, or
/// on one Redis Cluster, share rooms, broadcasts and requests.
///
/// Broadcasts are msgpack `[uid, packet, opts]` published on `<key>#<nsp>#`
/// (`<key>#<nsp>#<room>#` for exactly one room) and received through
/// `PSUBSCRIBE <key>#<nsp>#*`; requests are JSON on `<key>-request#<nsp>#`
/// (msgpack for a broadcast with acks), answers JSON (msgpack for acks) on
/// `<key>-response#<nsp>#`. The server count is `PUBSUB NUMSUB` of the request
/// channel, summed over the nodes of a cluster.
///
/// **Connection state recovery is not supported** (as with Node's adapter, whose
/// `RedisAdapter` extends the in-memory `Adapter`, not the session-aware one):
/// with recovery configured, broadcasts carry no offset and no session is kept,
/// so a reconnecting client starts a new session. Use
/// [`RedisStreams`](crate::adapter::RedisStreams) for recovery across servers.
///
/// ```no_run
/// # use rsio::{adapter::{RedisClassic, RedisClassicConfig}, server::{Server, ServerConfig}};
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisClassic::new("redis://127.0.0.1:6379", RedisClassicConfig::default())?;
/// // or, on a Redis Cluster: RedisClassic::cluster(&["redis://127.0.0.1:7000", …], config)
/// let io = Server::with_adapter(ServerConfig::default(), redis.factory());
/// redis.attach(&io);
/// # Ok(()) }
/// ```
///
/// One `RedisClassic` is one server's membership, shared by the adapters of all
/// its namespaces: one command connection (or cluster connection) and one
/// subscriber connection. For a Redis Cluster use [`RedisClassic::cluster`],
/// even with one seed node: the server count is summed over the nodes.
pub struct RedisClassic {
    config: RedisClassicConfig,
    link: Link,
    namespaces: RwLock<HashMap<String, Arc<ClassicNs>>>,
    pending: Requests<Pending>,
    server: OnceLock<ServerInnerRef>,
    /// Set when its host's primary receives the broadcast channels and
    /// forwards their messages ([`RedisClassic::on_fed_message`]): no pattern
    /// of its own. Told each namespace's uid.
    fed: OnceLock<Announce>,
    /// Set when its host's primary routes the broadcasts by room interest.
    interest: OnceLock<InterestFactory>,
    /// Set when the workers of its host share the broadcasts Redis did not get.
    host_relay: OnceLock<HostRelay>,
    /// Itself, for the tasks it spawns.
    this: Weak<RedisClassic>,
}

impl RedisClassic {
    fn with_link(link: Link, config: RedisClassicConfig) -> Arc<RedisClassic> {
        Arc::new_cyclic(|this| RedisClassic {
            config,
            link,
            namespaces: RwLock::default(),
            pending: Requests::default(),
            server: OnceLock::new(),
            fed: OnceLock::new(),
            interest: OnceLock::new(),
            host_relay: OnceLock::new(),
            this: this.clone(),
        })
    }

    /// A member for the Redis at `url` (`redis://host:port[/db]`); nothing is
    /// connected until [`RedisClassic::attach`].
    pub fn new(
        url: &str,
        config: RedisClassicConfig,
    ) -> Result<Arc<RedisClassic>, RedisAdapterError> {
        Ok(RedisClassic::with_link(Link::single(url)?, config))
    }

    /// A member for the Redis Cluster whose nodes (some or all) are at `urls`.
    pub fn cluster(
        urls: &[&str],
        config: RedisClassicConfig,
    ) -> Result<Arc<RedisClassic>, RedisAdapterError> {
        Ok(RedisClassic::with_link(Link::cluster(urls)?, config))
    }

    /// The options this member runs with.
    pub fn config(&self) -> &RedisClassicConfig {
        &self.config
    }

    /// The adapter factory to build the server with ([`Server::with_adapter`]).
    pub fn factory(self: &Arc<Self>) -> AdapterFactory {
        let node = self.clone();
        Arc::new(move |nsp: &str| node.adapter(nsp) as Arc<dyn crate::adapter::Adapter>)
    }

    /// The adapter of namespace `nsp` (registers it: its channels are subscribed).
    pub fn adapter(self: &Arc<Self>, nsp: &str) -> Arc<RedisClassicAdapter> {
        let key = &self.config.key;
        let uid = super::random_id();
        let response_channel = format!("{key}-response#{nsp}#");
        let ns = Arc::new(ClassicNs {
            nsp: nsp.to_string(),
            channel: format!("{key}#{nsp}#"),
            request_channel: format!("{key}-request#{nsp}#"),
            specific_channel: format!("{response_channel}{uid}#"),
            response_channel,
            servers: AtomicUsize::new(1),
            local: local_rooms(&self.interest, nsp),
            uid,
        });
        match self.fed.get() {
            Some(announce) => announce(&ns.nsp, &ns.uid),
            None => self
                .link
                .subscribe(Sub::Pattern(format!("{}*", ns.channel))),
        }
        for ch in [
            &ns.request_channel,
            &ns.response_channel,
            &ns.specific_channel,
        ] {
            self.link.subscribe(Sub::Channel(ch.clone()));
        }
        self.namespaces
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(nsp.to_string(), ns.clone());
        Arc::new(RedisClassicAdapter {
            ns,
            node: Arc::downgrade(self),
        })
    }

    /// Starts the connections (on the current tokio runtime) and delivers what
    /// other servers send to `server`'s namespaces. Redis being unreachable is
    /// logged and retried with backoff; the server keeps serving its own clients.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn attach(self: &Arc<Self>, server: &Server) {
        let _ = self.server.set(server.inner_ref());
        let member: Weak<dyn Member> = self.this.clone();
        self.link.start(member);
    }

    /// Subscribes no broadcast channel itself, and leaves the request channel's
    /// messages alone (it subscribes it to be counted as a server): its host's
    /// primary receives both once for all its workers and hands each message
    /// to [`RedisClassic::on_fed_message`]; `announce` is told the name and
    /// uid of each namespace. Call it before any adapter is made.
    pub(crate) fn set_fed(&self, announce: Announce) {
        let _ = self.fed.set(announce);
    }

    /// Each namespace's rooms appearing and disappearing here are told to the
    /// sink `interest` makes for it (the host's interest hints). Call it
    /// before any adapter is made.
    pub(crate) fn set_room_interest(&self, interest: InterestFactory) {
        let _ = self.interest.set(interest);
    }

    /// A broadcast whose `PUBLISH` was never sent (Redis unreachable) is also
    /// handed to `relay`: the other workers of its host deliver it to their
    /// clients. One whose outcome is unknown is not: Redis may have
    /// published it, and then the host's primary received it.
    pub(crate) fn set_host_relay(&self, relay: HostRelay) {
        let _ = self.host_relay.set(relay);
    }

    /// A broadcast or request channel's message its host's primary received,
    /// handled as if this server had received it.
    pub(crate) fn on_fed_message(&self, channel: &str, payload: &[u8]) {
        self.on_message(channel, payload);
    }

    /// Waits until the subscriber has connected once (or `timeout`); whether it did.
    pub async fn ready(&self, timeout: Duration) -> bool {
        self.link.ready(1, timeout).await
    }

    fn states(&self) -> Vec<Arc<ClassicNs>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn is_request_channel(&self, channel: &str) -> bool {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|ns| ns.request_channel == channel)
    }

    /// The namespace whose channel (or room channel) `channel` is, and whether
    /// it is a broadcast channel.
    fn namespace_of(&self, channel: &str) -> Option<(Arc<ClassicNs>, bool)> {
        let map = self.namespaces.read().unwrap_or_else(|e| e.into_inner());
        map.values().find_map(|ns| {
            if channel.starts_with(ns.channel.as_str()) {
                Some((ns.clone(), true))
            } else if channel == ns.request_channel
                || channel == ns.response_channel
                || channel == ns.specific_channel
            {
                Some((ns.clone(), false))
            } else {
                None
            }
        })
    }
}

impl Member for RedisClassic {
    fn link(&self) -> &Link {
        &self.link
    }

    fn on_pubsub(&self, channel: &str, payload: &[u8]) {
        if self.fed.get().is_some() && self.is_request_channel(channel) {
            // Subscribed to be counted as a server; the primary forwards the
            // requests, in order with the broadcasts.
            return;
        }
        self.on_message(channel, payload);
    }

    fn counted_channels(&self) -> Vec<String> {
        self.states()
            .iter()
            .map(|s| s.request_channel.clone())
            .collect()
    }

    fn set_counts(&self, counts: &HashMap<String, usize>) {
        for s in self.states() {
            if let Some(n) = counts.get(&s.request_channel) {
                s.servers.store((*n).max(1), Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_map_to_their_namespace() {
        let node = RedisClassic::new("redis://127.0.0.1:1", RedisClassicConfig::default()).unwrap();
        let main = node.adapter("/");
        let chat = node.adapter("/chat");
        let of = |ch: &str| node.namespace_of(ch).map(|(ns, b)| (ns.nsp.clone(), b));
        assert_eq!(of("socket.io#/#"), Some(("/".into(), true)));
        assert_eq!(of("socket.io#/#room#"), Some(("/".into(), true)));
        assert_eq!(of("socket.io#/chat#"), Some(("/chat".into(), true)));
        assert_eq!(of("socket.io#/chat#r#"), Some(("/chat".into(), true)));
        assert_eq!(
            of("socket.io-request#/chat#"),
            Some(("/chat".into(), false))
        );
        assert_eq!(of("socket.io-response#/#"), Some(("/".into(), false)));
        let specific = format!("socket.io-response#/chat#{}#", chat.uid());
        assert_eq!(of(&specific), Some(("/chat".into(), false)));
        assert_eq!(of("socket.io-request#/other#"), None);
        assert_eq!(of("other#/#"), None);
        assert_ne!(main.uid(), chat.uid());
        assert_eq!(main.uid().len(), 16);
        // What the subscriber asks for: one pattern and three channels each.
        let subs = node.link.subscriptions_for_test();
        assert!(subs.contains(&Sub::Pattern("socket.io#/chat#*".into())));
        assert!(subs.contains(&Sub::Channel("socket.io-request#/#".into())));
        assert_eq!(subs.len(), 8);
    }

    #[test]
    fn answers_go_to_the_shared_or_the_requesters_channel() {
        for (specific, channel) in [
            (false, "socket.io-response#/#"),
            (true, "socket.io-response#/#abc123#"),
        ] {
            let config = RedisClassicConfig {
                publish_on_specific_response_channel: specific,
                ..Default::default()
            };
            let node = RedisClassic::new("redis://127.0.0.1:1", config).unwrap();
            let adapter = node.adapter("/");
            node.respond(&adapter.ns, "abc123", "answer");
            let queued = node.link.queued_for_test();
            assert_eq!(
                queued,
                vec![vec![
                    b"PUBLISH".to_vec(),
                    channel.as_bytes().to_vec(),
                    b"answer".to_vec()
                ]]
            );
        }
    }
}
