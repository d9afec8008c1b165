//! What a server does with a message from Redis (Node's `ClusterAdapter.onMessage`
//! and `onResponse`): deliver, apply, answer, or hand a response to its request.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::{
    codec::{self, kind, CodecError, Data, JsonBroadcast, Message},
    NsState, Pending, RedisStreams,
};
use crate::{
    adapter::{BroadcastOptions, RemoteAck, SocketInfo},
    engine::Sid,
    parser::Args,
    server::{AckSender, Handshake, Namespace},
};

/// How long client acks of a broadcast from another server are forwarded.
const REMOTE_ACK_WINDOW: Duration = Duration::from_secs(120);

/// `Args` from JSON values (placeholders referring to `attachments`).
pub(super) fn args_of(values: &[Value], attachments: Vec<bytes::Bytes>) -> Args {
    let text: Vec<String> = values.iter().map(Value::to_string).collect();
    Args::from_raw(text.join(",").into(), attachments)
}

/// The first argument of `args` as JSON (placeholders kept) and the attachments.
pub(super) fn first_arg(args: &Args) -> Data {
    let json = args
        .get_raw(0)
        .and_then(|raw| serde_json::from_slice(&raw).ok())
        .unwrap_or(Value::Null);
    Data {
        json,
        attachments: args.attachments().to_vec(),
    }
}

impl RedisStreams {
    fn namespace(&self, nsp: &str) -> Option<Namespace> {
        self.server.get()?.namespace(nsp)
    }

    /// Handles a message read from the stream (`offset` = its entry id) or PUB/SUB.
    pub(super) fn on_message(&self, msg: Message, offset: Option<&str>) {
        if matches!(
            msg.kind,
            kind::FETCH_SOCKETS_RESPONSE
                | kind::SERVER_SIDE_EMIT_RESPONSE
                | kind::BROADCAST_CLIENT_COUNT
                | kind::BROADCAST_ACK
        ) {
            self.on_response(msg);
            return;
        }
        let Some(state) = self.namespace_state(&msg.nsp) else {
            return;
        };
        let own = msg.uid == state.uid;
        if own && !(msg.kind == kind::BROADCAST && offset.is_some()) {
            return;
        }
        let Some(ns) = self.namespace(&msg.nsp) else {
            return;
        };
        let data = msg.data.unwrap_or_default();
        let opts = codec::options_from(data.json.get("opts"));
        match msg.kind {
            kind::BROADCAST => self.on_broadcast(&state, &ns, &msg.uid, own, data, offset),
            kind::SOCKETS_JOIN => ns.local_sockets_join(&opts, &rooms(&data.json)),
            kind::SOCKETS_LEAVE => ns.local_sockets_leave(&opts, &rooms(&data.json)),
            kind::DISCONNECT_SOCKETS => {
                let close = data.json.get("close").and_then(Value::as_bool) == Some(true);
                ns.local_disconnect_sockets(&opts, close)
            }
            kind::FETCH_SOCKETS => {
                let Some(request) = request_id(&data.json) else {
                    return;
                };
                let sockets: Vec<Value> = ns.select(&opts).iter().map(socket_json).collect();
                self.respond(
                    &state,
                    &msg.uid,
                    kind::FETCH_SOCKETS_RESPONSE,
                    Data {
                        json: json!({"requestId": request, "sockets": sockets}),
                        attachments: Vec::new(),
                    },
                );
            }
            kind::SERVER_SIDE_EMIT => self.on_server_side_emit(&state, &ns, &msg.uid, data),
            other => debug!(target: "socket.io:redis", kind = other, "ignored message"),
        }
    }

    /// Publishes a response on the requester's private channel.
    fn respond(&self, state: &NsState, requester: &str, kind: u8, data: Data) {
        let channel = state.private_channel(&self.config.channel_prefix, requester);
        self.publish(
            &channel,
            &Message {
                kind,
                uid: state.uid.clone(),
                nsp: state.nsp.clone(),
                data: Some(data),
            },
        );
    }

    fn on_broadcast(
        &self,
        state: &NsState,
        ns: &Namespace,
        from: &str,
        own: bool,
        data: Data,
        offset: Option<&str>,
    ) {
        let Some(packet) = data.json.get("packet") else {
            debug!(target: "socket.io:redis", "broadcast without packet");
            return;
        };
        let opts = codec::options_from(data.json.get("opts"));
        let recovery = self.recovery.get().is_some();
        if own && (!recovery || opts.flags.volatile || data.json.get("requestId").is_some()) {
            // Already delivered here when it was sent.
            return;
        }
        if let Some(request) = request_id(&data.json) {
            // This server's ack id: the emitter's id means nothing to our clients.
            let ack_id = ns.next_ack_id();
            let Some(encoded) =
                codec::encode_event(&state.nsp, packet, &data.attachments, Some(ack_id), None)
            else {
                return;
            };
            let (tx, rx) = mpsc::unbounded_channel();
            let targets = ns.select(&opts);
            let count = ns.deliver_with_ack(&encoded, &targets, opts.flags, ack_id, tx);
            self.respond(
                state,
                from,
                kind::BROADCAST_CLIENT_COUNT,
                Data {
                    json: json!({"requestId": request, "clientCount": count}),
                    attachments: Vec::new(),
                },
            );
            if count == 0 {
                return;
            }
            let node = self.this.clone();
            let (from, request) = (from.to_string(), request.to_string());
            let nsp = state.nsp.clone();
            forward_acks(count, rx, move |args| {
                let Some(n) = node.upgrade() else { return };
                let Some(state) = n.namespace_state(&nsp) else {
                    return;
                };
                let arg = first_arg(&args);
                n.respond(
                    &state,
                    &from,
                    kind::BROADCAST_ACK,
                    Data {
                        json: json!({"requestId": request, "packet": arg.json}),
                        attachments: arg.attachments,
                    },
                );
            });
            return;
        }
        let ack = packet.get("id").and_then(Value::as_u64);
        let Some(array) = packet.get("data").filter(|d| d.is_array()) else {
            debug!(target: "socket.io:redis", "broadcast without data");
            return;
        };
        let array = array.to_string();
        self.deliver_broadcast(state, ns, &array, &data.attachments, ack, &opts, offset);
    }

    /// Delivers a broadcast (no acks asked) to this server's sockets, with its
    /// entry id as offset when Node would append one (recovery on, not
    /// volatile, no ack id).
    #[allow(clippy::too_many_arguments)]
    fn deliver_broadcast(
        &self,
        state: &NsState,
        ns: &Namespace,
        array: &str,
        attachments: &[bytes::Bytes],
        ack: Option<u64>,
        opts: &BroadcastOptions,
        offset: Option<&str>,
    ) {
        let recovery = self.recovery.get().is_some();
        let offset = offset.filter(|_| recovery && !opts.flags.volatile && ack.is_none());
        let Some(encoded) = codec::encode_raw(&state.nsp, array, attachments, ack, offset) else {
            debug!(target: "socket.io:redis", "broadcast with an invalid packet");
            return;
        };
        let skip = match offset.and_then(codec::entry_order) {
            Some(order) => state.replay().remember(order, opts, &encoded),
            None => Vec::new(),
        };
        ns.deliver_skipping(&encoded, opts, None, &skip);
    }

    /// Handles a stream entry. The common case, a JSON BROADCAST without ack, is
    /// read without building a JSON tree.
    pub(super) fn handle_entry(
        &self,
        fields: &[(&[u8], &[u8])],
        id: &str,
    ) -> Result<(), CodecError> {
        let field = |name: &[u8]| fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        if let (Some(b"3"), Some(nsp), Some(data)) = (field(b"type"), field(b"nsp"), field(b"data"))
        {
            if let Some(b) = JsonBroadcast::parse(data).filter(|_| data.first() == Some(&b'{')) {
                let nsp = std::str::from_utf8(nsp).map_err(|_| CodecError::Invalid("nsp"))?;
                self.on_json_broadcast(nsp, field(b"uid").unwrap_or_default(), b, id);
                return Ok(());
            }
        }
        let msg = codec::parse_entry(fields.iter().copied())?;
        self.on_message(msg, Some(id));
        Ok(())
    }

    fn on_json_broadcast(&self, nsp: &str, uid: &[u8], b: JsonBroadcast<'_>, offset: &str) {
        let Some(state) = self.namespace_state(nsp) else {
            return;
        };
        let (array, ack) = (b.array(), b.ack());
        let opts = b.options();
        if uid == state.uid.as_bytes() && (self.recovery.get().is_none() || opts.flags.volatile) {
            // Already delivered here when it was sent.
            return;
        }
        let Some(ns) = self.namespace(nsp) else {
            return;
        };
        self.deliver_broadcast(&state, &ns, array, &[], ack, &opts, Some(offset));
    }

    fn on_server_side_emit(&self, state: &NsState, ns: &Namespace, from: &str, data: Data) {
        let Some(Value::Array(packet)) = data.json.get("packet") else {
            return;
        };
        let Some(event) = packet.first().and_then(Value::as_str) else {
            return;
        };
        let args = args_of(&packet[1..], data.attachments);
        let ack = match request_id(&data.json) {
            Some(request) => {
                let (tx, rx) = oneshot::channel::<Args>();
                let node = self.this.clone();
                let (from, request) = (from.to_string(), request.to_string());
                let nsp = state.nsp.clone();
                tokio::spawn(async move {
                    let Ok(args) = rx.await else { return };
                    let Some(n) = node.upgrade() else {
                        return;
                    };
                    let Some(state) = n.namespace_state(&nsp) else {
                        return;
                    };
                    let arg = first_arg(&args);
                    n.respond(
                        &state,
                        &from,
                        kind::SERVER_SIDE_EMIT_RESPONSE,
                        Data {
                            json: json!({"requestId": request, "packet": arg.json}),
                            attachments: arg.attachments,
                        },
                    );
                });
                AckSender::channel(tx)
            }
            None => AckSender::none(),
        };
        ns.on_server_side_emit(event, args, ack);
    }

    /// A response to one of this server's requests.
    fn on_response(&self, msg: Message) {
        let Some(data) = msg.data else { return };
        let Some(request) = request_id(&data.json) else {
            return;
        };
        let pending = self.pending.lock();
        let Some(p) = pending.get(request) else {
            return;
        };
        match (msg.kind, p) {
            (kind::FETCH_SOCKETS_RESPONSE, Pending::Fetch(tx)) => {
                let sockets = data
                    .json
                    .get("sockets")
                    .and_then(Value::as_array)
                    .map(|list| list.iter().filter_map(socket_info).collect())
                    .unwrap_or_default();
                let _ = tx.send(sockets);
            }
            (kind::SERVER_SIDE_EMIT_RESPONSE, Pending::ServerSide(tx)) => {
                let arg = data.json.get("packet").cloned().unwrap_or(Value::Null);
                let _ = tx.send(args_of(&[arg], data.attachments));
            }
            (kind::BROADCAST_CLIENT_COUNT, Pending::Broadcast(tx)) => {
                let n = data
                    .json
                    .get("clientCount")
                    .and_then(Value::as_u64)
                    .unwrap_or(0);
                let _ = tx.send(RemoteAck::ClientCount(0, n));
            }
            (kind::BROADCAST_ACK, Pending::Broadcast(tx)) => {
                let arg = data.json.get("packet").cloned().unwrap_or(Value::Null);
                let _ = tx.send(RemoteAck::Ack(args_of(&[arg], data.attachments)));
            }
            _ => debug!(target: "socket.io:redis", kind = msg.kind, "unexpected response"),
        }
    }
}

/// A local socket as `fetchSockets` answers describe it (`undefined` handshake
/// fields left out, as `JSON.stringify` does).
pub(super) fn socket_json(s: &crate::server::Socket) -> Value {
    let mut handshake = s.handshake().to_json();
    if let Value::Object(m) = &mut handshake {
        m.retain(|_, v| !v.is_null());
    }
    json!({"id": s.id().to_string(), "handshake": handshake, "rooms": s.rooms(), "data": s.data_value()})
}

/// Passes the first `count` client acks of a broadcast from another server to
/// `send`, for at most [`REMOTE_ACK_WINDOW`].
pub(super) fn forward_acks(
    count: usize,
    mut rx: mpsc::UnboundedReceiver<Args>,
    send: impl Fn(Args) + Send + Sync + 'static,
) {
    tokio::spawn(async move {
        let forward = async {
            for _ in 0..count {
                let Some(args) = rx.recv().await else { break };
                send(args);
            }
        };
        let _ = tokio::time::timeout(REMOTE_ACK_WINDOW, forward).await;
    });
}

pub(super) fn request_id(data: &Value) -> Option<&str> {
    data.get("requestId").and_then(Value::as_str)
}

pub(super) fn rooms(data: &Value) -> Vec<String> {
    data.get("rooms")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub(super) fn socket_info(v: &Value) -> Option<SocketInfo> {
    Some(SocketInfo {
        id: Sid::parse(v.get("id")?.as_str()?)?,
        handshake: v
            .get("handshake")
            .filter(|h| !h.is_null())
            .and_then(Handshake::from_json),
        rooms: rooms(v),
        data: v.get("data").cloned().unwrap_or(Value::Null),
    })
}
