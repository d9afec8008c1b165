//! [`RedisClassicAdapter`]: a namespace's rooms in a [`LocalAdapter`](crate::adapter::LocalAdapter),
//! its operations on other servers as `@socket.io/redis-adapter` messages.

use std::{
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;
use tracing::debug;

use super::{
    codec::{self, request},
    ClassicNs, Pending, RedisClassic,
};
use crate::{
    adapter::{
        redis::codec::event_parts, Adapter, AdapterError, BroadcastOptions, EncodedPacket,
        PartialResponses, RemoteAcks, SocketInfo,
    },
    parser::Args,
};

/// Request ids: 6 random bytes in hex.
const REQUEST_ID_BYTES: usize = 6;

/// The adapter of one namespace of a server that is a member of a classic
/// Redis adapter cluster (see [`RedisClassic`]). Connection state recovery is
/// not supported: see [`RedisClassic`].
pub struct RedisClassicAdapter {
    pub(super) ns: Arc<ClassicNs>,
    pub(super) node: Weak<RedisClassic>,
}

impl RedisClassicAdapter {
    fn node(&self) -> Option<Arc<RedisClassic>> {
        self.node.upgrade()
    }

    /// This namespace's uid on Redis (16 hex digits).
    pub fn uid(&self) -> &str {
        &self.ns.uid
    }

    fn publish_request(&self, node: &RedisClassic, payload: impl redis::ToRedisArgs) {
        node.link.publish(&self.ns.request_channel, payload);
    }
}

/// Other servers now: `PUBSUB NUMSUB` of the request channel, minus this one.
async fn others(node: &RedisClassic, ns: &ClassicNs) -> usize {
    let channel = std::slice::from_ref(&ns.request_channel);
    match node.link.numsub(channel).await {
        Ok(n) => n
            .get(&ns.request_channel)
            .copied()
            .unwrap_or(0)
            .saturating_sub(1),
        Err(err) => {
            debug!(target: "socket.io:redis", "server count: {err}");
            ns.servers.load(Ordering::Relaxed).saturating_sub(1)
        }
    }
}

/// The JSON text of `[event, …args]`, binary as Node's `JSON.stringify` writes
/// a `Buffer`.
fn server_side_data(event: &str, args: &Args) -> String {
    let mut text = String::with_capacity(8 + event.len() + args.json().len());
    text.push('[');
    text.push_str(&Value::String(event.to_string()).to_string());
    if !args.json().is_empty() {
        text.push(',');
        text.push_str(&String::from_utf8_lossy(args.json()));
    }
    text.push(']');
    if args.attachments().is_empty() {
        return text;
    }
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    codec::buffers_as_json(&value, args.attachments()).to_string()
}

impl Adapter for RedisClassicAdapter {
    crate::adapter::redis::delegate_local!(ns.local);

    /// Subscribers of the namespace's request channel, refreshed every second.
    fn server_count(&self) -> usize {
        self.ns.servers.load(Ordering::Relaxed).max(1)
    }

    fn broadcast_remote(&self, packet: &EncodedPacket, opts: &BroadcastOptions) {
        let Some(node) = self.node() else { return };
        let Some(parts) = event_parts(packet) else {
            debug!(target: "socket.io:redis", "broadcast of a frame that is not an event");
            return;
        };
        match codec::broadcast_message(&self.ns.uid, &self.ns.nsp, &parts, opts) {
            Ok(msg) => {
                // One Redis never got goes to the host's other workers, when the
                // host relays (the closure only then: a library member pays nothing).
                let on_fail = node.host_relay.get().map(|relay| {
                    crate::adapter::redis::relay_if_not_sent(
                        relay,
                        self.ns.clone(),
                        |ns| &ns.nsp,
                        packet,
                        opts,
                    )
                });
                let channel = codec::broadcast_channel(&self.ns.channel, opts);
                node.link.publish_or(&channel, msg, on_fail)
            }
            Err(err) => debug!(target: "socket.io:redis", "broadcast not sent: {err}"),
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
        let parts = event_parts(packet)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let (request, guard) = node
            .pending
            .register(Pending::Broadcast(tx), REQUEST_ID_BYTES);
        // Node's packet carries no id: each server numbers its own acks.
        let msg =
            codec::broadcast_request(&self.ns.uid, &request, &self.ns.nsp, &parts, opts).ok()?;
        self.publish_request(&node, msg);
        Some(RemoteAcks {
            servers,
            events: rx,
            cleanup: Box::new(guard),
        })
    }

    fn sockets_join_remote(&self, opts: &BroadcastOptions, rooms: &[String]) {
        if let Some(node) = self.node() {
            let msg = codec::rooms_request(&self.ns.uid, request::REMOTE_JOIN, opts, rooms);
            self.publish_request(&node, msg);
        }
    }

    fn sockets_leave_remote(&self, opts: &BroadcastOptions, rooms: &[String]) {
        if let Some(node) = self.node() {
            let msg = codec::rooms_request(&self.ns.uid, request::REMOTE_LEAVE, opts, rooms);
            self.publish_request(&node, msg);
        }
    }

    fn disconnect_sockets_remote(&self, opts: &BroadcastOptions, close: bool) {
        if let Some(node) = self.node() {
            let msg = codec::disconnect_request(&self.ns.uid, opts, close);
            self.publish_request(&node, msg);
        }
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
        let (request, guard) = node.pending.register(Pending::Fetch(tx), REQUEST_ID_BYTES);
        let msg = codec::fetch_request(&self.ns.uid, &request, opts);
        let ns = self.ns.clone();
        Box::pin(async move {
            let _guard = guard;
            let expected = others(&node, &ns).await;
            if expected == 0 {
                return Ok(Vec::new());
            }
            node.link.publish(&ns.request_channel, msg);
            crate::adapter::redis::requests::collect_lists(&mut rx, expected, timeout).await
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
        let data = server_side_data(event, args);
        if timeout.is_zero() {
            let msg = codec::server_side_request(&self.ns.uid, None, &data);
            self.publish_request(&node, msg);
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (request, guard) = node
            .pending
            .register(Pending::ServerSide(tx), REQUEST_ID_BYTES);
        // Sent now, as the trait promises; the count is asked meanwhile.
        let msg = codec::server_side_request(&self.ns.uid, Some(&request), &data);
        self.publish_request(&node, msg);
        let ns = self.ns.clone();
        Box::pin(async move {
            let _guard = guard;
            let expected = others(&node, &ns).await;
            match crate::adapter::redis::requests::collect(&mut rx, expected, timeout).await {
                (responses, 0) => Ok(responses),
                (responses, missing) => Err(PartialResponses { missing, responses }),
            }
        })
    }
}
