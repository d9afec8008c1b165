//! [`RedisStreamsAdapter`]: a namespace's rooms in a [`LocalAdapter`], its
//! operations on other servers through Redis.

use std::{
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::debug;

use super::{
    codec::{self, kind, Data, Message},
    link::{Failure, OnFail},
    requests::RequestGuard,
    session, NsState, Pending, RedisStreams,
};
use crate::{
    adapter::{
        Adapter, AdapterError, BroadcastOptions, EncodedPacket, LocalAdapter, PartialResponses,
        PersistedSession, RemoteAcks, Restored, SocketId, SocketInfo,
    },
    parser::Args,
};

/// The adapter of one namespace of a server that is a member of a Redis Streams
/// cluster (see [`RedisStreams`]).
pub struct RedisStreamsAdapter {
    pub(super) local: LocalAdapter,
    pub(super) ns: Arc<NsState>,
    pub(super) node: Weak<RedisStreams>,
}

impl RedisStreamsAdapter {
    fn node(&self) -> Option<Arc<RedisStreams>> {
        self.node.upgrade()
    }

    /// This namespace's uid on Redis (16 hex digits).
    pub fn uid(&self) -> &str {
        &self.ns.uid
    }

    fn message(&self, kind: u8, json: Value, attachments: Vec<bytes::Bytes>) -> Message {
        Message {
            kind,
            uid: self.ns.uid.clone(),
            nsp: self.ns.nsp.clone(),
            data: Some(Data { json, attachments }),
        }
    }

    /// `XADD`s a BROADCAST; `on_fail` runs if Redis cannot take it.
    fn xadd_broadcast(
        &self,
        node: &RedisStreams,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        on_fail: Option<OnFail>,
    ) {
        let Some(parts) = codec::event_parts(packet) else {
            debug!(target: "socket.io:redis", "broadcast of a frame that is not an event");
            return;
        };
        let data = codec::broadcast_entry_data(&parts, opts);
        node.xadd(&self.ns, kind::BROADCAST, Some(data), on_fail);
    }

    fn xadd_json(&self, kind: u8, json: Value) {
        if let Some(node) = self.node() {
            node.xadd(&self.ns, kind, Some(json.to_string()), None);
        }
    }

    /// Registers a pending request; it is forgotten when the guard drops.
    fn register(
        &self,
        node: &Arc<RedisStreams>,
        pending: Pending,
    ) -> (String, RequestGuard<Pending>) {
        node.pending.register(pending, 8)
    }
}

/// Other servers now: `PUBSUB NUMSUB` of the public channel, minus this one.
async fn others(node: &RedisStreams, ns: &NsState) -> usize {
    match node.link.numsub(std::slice::from_ref(&ns.public)).await {
        Ok(n) => n.get(&ns.public).copied().unwrap_or(0).saturating_sub(1),
        Err(err) => {
            debug!(target: "socket.io:redis", "server count: {err}");
            ns.servers.load(Ordering::Relaxed).saturating_sub(1)
        }
    }
}

impl Adapter for RedisStreamsAdapter {
    super::delegate_local!(local);

    /// Subscribers of the namespace's public channel, refreshed every second.
    fn server_count(&self) -> usize {
        self.ns.servers.load(Ordering::Relaxed).max(1)
    }

    fn sequenced(&self) -> bool {
        self.node().is_some_and(|n| n.recovery.get().is_some())
    }

    /// `XADD`s the packet; every server, this one included, delivers it when its
    /// reader sees the entry, with the entry id as offset. If Redis cannot take
    /// it, it is delivered here without an offset (and, when the host relays,
    /// by the host's other workers); if Redis may have taken it (the
    /// connection broke before the reply), the reader will not deliver its
    /// entry here again.
    fn broadcast_sequenced(&self, packet: &EncodedPacket, opts: &BroadcastOptions) {
        let Some(node) = self.node() else { return };
        let fallback = {
            let (node, state) = (node.this.clone(), self.ns.clone());
            let (packet, opts) = (packet.clone(), opts.clone());
            Box::new(move |failure: Failure, cmd: &redis::Cmd| {
                let Some(n) = node.upgrade() else { return };
                match (failure, n.host_relay.get()) {
                    (Failure::Unknown, _) => n.unconfirmed.keep(cmd),
                    (Failure::NotSent, Some(relay)) => relay(&state.nsp, &packet, &opts),
                    (Failure::NotSent, None) => {}
                }
                if let Some(ns) = n.server.get().and_then(|s| s.namespace(&state.nsp)) {
                    ns.deliver(&packet, &opts, None);
                }
            }) as OnFail
        };
        self.xadd_broadcast(&node, packet, opts, Some(fallback));
    }

    fn persist_session(&self, session: PersistedSession) {
        if let (Some(node), true) = (self.node(), self.sequenced()) {
            session::persist(&node, &session);
        }
    }

    fn restore_session(&self, pid: &str, offset: &str) -> BoxFuture<'static, Option<Restored>> {
        let Some(node) = self.node().filter(|n| n.recovery.get().is_some()) else {
            return Box::pin(std::future::ready(None));
        };
        let (ns, pid, offset) = (self.ns.clone(), pid.to_string(), offset.to_string());
        Box::pin(async move { session::restore(&node, &ns, &pid, &offset).await })
    }

    fn missed_after(&self, horizon: u64, rooms: &[String]) -> Vec<EncodedPacket> {
        self.ns.replay().missed_after(horizon, rooms)
    }

    /// Live packets skip the socket from before its join until the packets
    /// kept since `horizon` are taken (see `Replay::joining`): once each, on a
    /// multi-thread runtime too.
    fn join_restored(&self, id: SocketId, rooms: &[String], horizon: u64) -> Vec<EncodedPacket> {
        self.ns.replay().joining(id);
        self.add_all(id, rooms);
        self.ns.replay().joined(id, horizon, rooms)
    }

    /// `XADD`s the packet; this server delivered it already. One Redis never
    /// got goes to the host's other workers, when the host relays.
    fn broadcast_remote(&self, packet: &EncodedPacket, opts: &BroadcastOptions) {
        if let Some(node) = self.node() {
            // The closure only when a host relays: a library member pays nothing.
            let on_fail = node.host_relay.get().map(|relay| {
                super::relay_if_not_sent(relay, self.ns.clone(), |ns| &ns.nsp, packet, opts)
            });
            self.xadd_broadcast(&node, packet, opts, on_fail);
        }
    }

    fn broadcast_with_ack_remote(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        _ack_id: u64,
    ) -> Option<RemoteAcks> {
        let node = self.node()?;
        let servers = self.server_count().saturating_sub(1);
        if servers == 0 {
            return None;
        }
        let parts = codec::event_parts(packet)?;
        // Node's packet carries no id: each server numbers its own acks.
        let node_packet = codec::node_packet(&parts).ok()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (request, guard) = self.register(&node, Pending::Broadcast(tx));
        let message = self.message(
            kind::BROADCAST,
            json!({"packet": node_packet, "requestId": request, "opts": codec::options_json(opts)}),
            parts.attachments,
        );
        node.publish(&self.ns.public, &message);
        Some(RemoteAcks {
            servers,
            events: rx,
            cleanup: Box::new(guard),
        })
    }

    fn sockets_join_remote(&self, opts: &BroadcastOptions, rooms: &[String]) {
        let opts = codec::options_json(opts);
        self.xadd_json(kind::SOCKETS_JOIN, json!({"opts": opts, "rooms": rooms}));
    }

    fn sockets_leave_remote(&self, opts: &BroadcastOptions, rooms: &[String]) {
        let opts = codec::options_json(opts);
        self.xadd_json(kind::SOCKETS_LEAVE, json!({"opts": opts, "rooms": rooms}));
    }

    fn disconnect_sockets_remote(&self, opts: &BroadcastOptions, close: bool) {
        let opts = codec::options_json(opts);
        let data = if close {
            json!({"opts": opts, "close": true})
        } else {
            json!({"opts": opts})
        };
        self.xadd_json(kind::DISCONNECT_SOCKETS, data);
    }

    fn fetch_sockets_remote(
        &self,
        opts: &BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<SocketInfo>, AdapterError>> {
        let Some(node) = self.node() else {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (request, guard) = self.register(&node, Pending::Fetch(tx));
        let message = self.message(
            kind::FETCH_SOCKETS,
            json!({"opts": codec::options_json(opts), "requestId": request}),
            Vec::new(),
        );
        let ns = self.ns.clone();
        Box::pin(async move {
            let _guard = guard;
            let expected = others(&node, &ns).await;
            if expected == 0 {
                return Ok(Vec::new());
            }
            node.publish(&ns.public, &message);
            super::requests::collect_lists(&mut rx, expected, timeout).await
        })
    }

    fn server_side_emit_remote(
        &self,
        event: &str,
        args: &Args,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<Args>, PartialResponses<Args>>> {
        let Some(node) = self.node() else {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        };
        let mut text = String::with_capacity(8 + event.len() + args.json().len());
        text.push('[');
        text.push_str(&Value::String(event.to_string()).to_string());
        if !args.json().is_empty() {
            text.push(',');
            text.push_str(&String::from_utf8_lossy(args.json()));
        }
        text.push(']');
        let packet: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let attachments = args.attachments().to_vec();
        if timeout.is_zero() {
            let message = self.message(
                kind::SERVER_SIDE_EMIT,
                json!({"packet": packet}),
                attachments,
            );
            node.publish(&self.ns.public, &message);
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (request, guard) = self.register(&node, Pending::ServerSide(tx));
        let message = self.message(
            kind::SERVER_SIDE_EMIT,
            json!({"requestId": request, "packet": packet}),
            attachments,
        );
        // Sent now, as the trait promises; the count is asked meanwhile.
        node.publish(&self.ns.public, &message);
        let ns = self.ns.clone();
        Box::pin(async move {
            let _guard = guard;
            let expected = others(&node, &ns).await;
            match super::requests::collect(&mut rx, expected, timeout).await {
                (responses, 0) => Ok(responses),
                (responses, missing) => Err(PartialResponses { missing, responses }),
            }
        })
    }
}
