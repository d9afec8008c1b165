//! What a server does with a message from Redis (`onmessage`, `onrequest` and
//! `onresponse` of Node's `RedisAdapter`): deliver, apply, answer, or hand an
//! answer to its request. A message that cannot be read is logged and skipped.

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::{
    codec::{self, request, Broadcast},
    ClassicNs, Pending, RedisClassic,
};
use crate::{
    adapter::{
        redis::{
            codec::{encode_raw, Data},
            dispatch::{
                args_of, first_arg, forward_acks, request_id, rooms, socket_info, socket_json,
            },
        },
        BroadcastOptions, RemoteAck,
    },
    parser::Args,
    server::{AckSender, Namespace},
};

impl RedisClassic {
    fn namespace(&self, nsp: &str) -> Option<Namespace> {
        self.server.get()?.namespace(nsp)
    }

    /// A message on one of the subscribed channels.
    pub(super) fn on_message(&self, channel: &str, payload: &[u8]) {
        let Some((ns, broadcast)) = self.namespace_of(channel) else {
            return;
        };
        if broadcast {
            if codec::is_from(payload, &ns.uid) {
                return;
            }
            match codec::parse_broadcast(payload) {
                Ok(b) => self.on_broadcast(&ns, b),
                Err(err) => {
                    warn!(target: "socket.io:redis", channel, "invalid message skipped: {err}")
                }
            }
            return;
        }
        let data = match codec::parse_json_or_msgpack(payload) {
            Ok(d) => d,
            Err(err) => {
                warn!(target: "socket.io:redis", channel, "invalid message skipped: {err}");
                return;
            }
        };
        if channel == ns.request_channel {
            self.on_request(&ns, data);
        } else {
            self.on_response(data);
        }
    }

    fn on_broadcast(&self, ns: &ClassicNs, b: Broadcast) {
        if b.nsp != ns.nsp {
            return;
        }
        let Some(namespace) = self.namespace(&ns.nsp) else {
            return;
        };
        let Some(encoded) = encode_raw(&ns.nsp, &b.data, &b.attachments, None, None) else {
            warn!(target: "socket.io:redis", "invalid message skipped: empty packet data");
            return;
        };
        namespace.deliver(&encoded, &b.opts, None);
    }

    /// Publishes an answer where the requester `uid` listens.
    pub(super) fn respond(&self, ns: &ClassicNs, uid: &str, payload: impl redis::ToRedisArgs) {
        if self.config.publish_on_specific_response_channel {
            let channel = format!("{}{uid}#", ns.response_channel);
            self.link.publish(&channel, payload);
        } else {
            self.link.publish(&ns.response_channel, payload);
        }
    }

    fn on_request(&self, ns: &ClassicNs, data: Data) {
        let json = &data.json;
        let uid = json
            .get("uid")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let uid = uid.as_str();
        if uid == ns.uid {
            // Applied here already when it was sent.
            return;
        }
        let Some(namespace) = self.namespace(&ns.nsp) else {
            return;
        };
        let Some(kind) = json.get("type").and_then(Value::as_u64) else {
            warn!(target: "socket.io:redis", "invalid message skipped: request without type");
            return;
        };
        let request = request_id(json).map(String::from);
        let request = request.as_deref();
        let opts = json.get("opts").map(|o| codec::options_from(Some(o)));
        match kind {
            request::SOCKETS => {
                let Some(request) = request else { return };
                let opts = BroadcastOptions {
                    rooms: rooms(json),
                    ..Default::default()
                };
                let ids: Vec<String> = namespace
                    .select(&opts)
                    .iter()
                    .map(|s| s.id().to_string())
                    .collect();
                let answer = serde_json::json!({"requestId": request, "sockets": ids});
                self.respond(ns, uid, answer.to_string());
            }
            request::ALL_ROOMS => {
                let Some(request) = request else { return };
                let answer = serde_json::json!({"requestId": request, "rooms": crate::adapter::Adapter::rooms(&ns.local)});
                self.respond(ns, uid, answer.to_string());
            }
            request::REMOTE_JOIN | request::REMOTE_LEAVE | request::REMOTE_DISCONNECT => {
                self.on_sockets_request(ns, &namespace, kind, uid, json, opts)
            }
            request::REMOTE_FETCH => {
                let Some(request) = request else { return };
                let opts = opts.unwrap_or_default();
                let sockets: Vec<Value> = namespace.select(&opts).iter().map(socket_json).collect();
                let answer = serde_json::json!({"requestId": request, "sockets": sockets});
                self.respond(ns, uid, answer.to_string());
            }
            request::SERVER_SIDE_EMIT => self.on_server_side_emit(ns, &namespace, data),
            request::BROADCAST => self.on_broadcast_with_ack(ns, &namespace, uid, data),
            other => debug!(target: "socket.io:redis", kind = other, "ignored request"),
        }
    }

    /// `socketsJoin`/`socketsLeave`/`disconnectSockets` (with `opts`), or the
    /// older per-socket form (`sid`, `room`), answered when the socket is here.
    fn on_sockets_request(
        &self,
        ns: &ClassicNs,
        namespace: &Namespace,
        kind: u64,
        uid: &str,
        json: &Value,
        opts: Option<BroadcastOptions>,
    ) {
        let close = json.get("close").and_then(Value::as_bool) == Some(true);
        if let Some(opts) = opts {
            match kind {
                request::REMOTE_JOIN => namespace.local_sockets_join(&opts, &rooms(json)),
                request::REMOTE_LEAVE => namespace.local_sockets_leave(&opts, &rooms(json)),
                _ => namespace.local_disconnect_sockets(&opts, close),
            }
            return;
        }
        let Some(sid) = json.get("sid").and_then(Value::as_str) else {
            return;
        };
        let opts = BroadcastOptions {
            rooms: vec![sid.to_string()],
            ..Default::default()
        };
        if namespace.select(&opts).is_empty() {
            return;
        }
        let room = json.get("room").and_then(Value::as_str).map(String::from);
        match (kind, room) {
            (request::REMOTE_JOIN, Some(room)) => namespace.local_sockets_join(&opts, &[room]),
            (request::REMOTE_LEAVE, Some(room)) => namespace.local_sockets_leave(&opts, &[room]),
            (request::REMOTE_DISCONNECT, _) => namespace.local_disconnect_sockets(&opts, close),
            _ => return,
        }
        if let Some(request) = request_id(json) {
            self.respond(
                ns,
                uid,
                serde_json::json!({"requestId": request}).to_string(),
            );
        }
    }

    fn on_server_side_emit(&self, ns: &ClassicNs, namespace: &Namespace, data: Data) {
        let Some(Value::Array(packet)) = data.json.get("data") else {
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
                let (request, nsp) = (request.to_string(), ns.nsp.clone());
                tokio::spawn(async move {
                    let Ok(args) = rx.await else { return };
                    let Some(n) = node.upgrade() else { return };
                    let Some(ns) = n.namespace_state(&nsp) else {
                        return;
                    };
                    let arg = first_arg(&args);
                    let arg = codec::buffers_as_json(&arg.json, &arg.attachments);
                    // Node answers on the shared channel, whatever the option.
                    let answer = codec::server_side_response(&request, &arg);
                    n.link.publish(&ns.response_channel, answer);
                });
                AckSender::channel(tx)
            }
            None => AckSender::none(),
        };
        namespace.on_server_side_emit(event, args, ack);
    }

    fn on_broadcast_with_ack(&self, ns: &ClassicNs, namespace: &Namespace, uid: &str, data: Data) {
        let (Some(request), Some(packet)) = (request_id(&data.json), data.json.get("packet"))
        else {
            return;
        };
        let Some(array) = packet.get("data").filter(|d| d.is_array()) else {
            return;
        };
        let opts = codec::options_from(data.json.get("opts"));
        // This server's ack id: the sender's means nothing to our clients.
        let ack_id = namespace.next_ack_id();
        let Some(encoded) = encode_raw(
            &ns.nsp,
            &array.to_string(),
            &data.attachments,
            Some(ack_id),
            None,
        ) else {
            return;
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let targets = namespace.select(&opts);
        let count = namespace.deliver_with_ack(&encoded, &targets, opts.flags, ack_id, tx);
        self.respond(ns, uid, codec::client_count_response(request, count));
        if count == 0 {
            return;
        }
        let node = self.this.clone();
        let (uid, request, nsp) = (uid.to_string(), request.to_string(), ns.nsp.clone());
        forward_acks(count, rx, move |args| {
            let Some(n) = node.upgrade() else { return };
            let Some(ns) = n.namespace_state(&nsp) else {
                return;
            };
            n.respond(&ns, &uid, codec::ack_response(&request, &first_arg(&args)));
        });
    }

    /// An answer to a request; answers to other servers' requests are ignored.
    fn on_response(&self, data: Data) {
        let Some(request) = request_id(&data.json) else {
            return;
        };
        let pending = self.pending.lock();
        let Some(p) = pending.get(request) else {
            return;
        };
        let kind = data.json.get("type").and_then(Value::as_u64);
        match p {
            Pending::Fetch(tx) => {
                let sockets = data
                    .json
                    .get("sockets")
                    .and_then(Value::as_array)
                    .map(|list| list.iter().filter_map(socket_info).collect())
                    .unwrap_or_default();
                let _ = tx.send(sockets);
            }
            Pending::ServerSide(tx) => {
                let arg = data.json.get("data").cloned().unwrap_or(Value::Null);
                let _ = tx.send(args_of(&[arg], data.attachments));
            }
            Pending::Broadcast(tx) => match kind {
                Some(request::BROADCAST_CLIENT_COUNT) => {
                    let n = data
                        .json
                        .get("clientCount")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let _ = tx.send(RemoteAck::ClientCount(0, n));
                }
                Some(request::BROADCAST_ACK) => {
                    let arg = data.json.get("packet").cloned().unwrap_or(Value::Null);
                    let _ = tx.send(RemoteAck::Ack(args_of(&[arg], data.attachments)));
                }
                _ => debug!(target: "socket.io:redis", "unexpected answer to a broadcast"),
            },
        }
    }

    fn namespace_state(&self, nsp: &str) -> Option<std::sync::Arc<ClassicNs>> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(nsp)
            .cloned()
    }
}
