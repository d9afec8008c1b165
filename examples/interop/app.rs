//! The handlers of the interop test server (see `main.rs`).

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use rsio::{
    adapter::RecoveryConfig,
    engine::{CorsOptions, CorsOrigin},
    parser::{Args, Binary},
    server::{AckSender, ConnectError, Data, Server, ServerConfig, Socket},
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Server-wide record of why each socket left: `{reason, roomsAtDisconnecting}`.
type Reasons = Arc<Mutex<ReasonLog>>;

/// Records kept, the oldest dropped first: enough for any test, and a soak
/// (`scripts/soak`) does not see the test server's bookkeeping grow without bound.
const KEPT_RECORDS: usize = 1000;

#[derive(Default)]
struct ReasonLog {
    by_id: HashMap<String, Value>,
    order: VecDeque<String>,
}

impl ReasonLog {
    fn insert(&mut self, id: String, record: Value) {
        if self.by_id.insert(id.clone(), record).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > KEPT_RECORDS {
            if let Some(old) = self.order.pop_front() {
                self.by_id.remove(&old);
            }
        }
    }

    fn get(&self, id: &str) -> Option<&Value> {
        self.by_id.get(id)
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct BroadcastOpts {
    pub(crate) event: String,
    args: Vec<Value>,
    pub(crate) to: Vec<String>,
    except: Vec<String>,
    broadcast: bool,
    local: bool,
    volatile: bool,
    pub(crate) timeout: Option<u64>,
    #[serde(rename = "in")]
    in_rooms: Vec<String>,
    rooms: Vec<String>,
    close: bool,
    /// `compress(false)` when `false`.
    compress: Option<bool>,
    /// fetch-sockets: each socket's handshake (auth, query, address) too.
    handshake: bool,
}

/// A JSON value whose binary placeholders were resolved to the packet's
/// attachments, so it can be sent on (renumbered) inside other arguments.
enum Val {
    Json(Value),
    Bin(Binary),
    Arr(Vec<Val>),
    Obj(Vec<(String, Val)>),
}

impl Val {
    fn resolve(value: Value, attachments: &[bytes::Bytes]) -> Val {
        match value {
            Value::Object(map) if map.get("_placeholder") == Some(&Value::Bool(true)) => {
                let num = map.get("num").and_then(Value::as_u64).unwrap_or(u64::MAX) as usize;
                match attachments.get(num) {
                    Some(b) => Val::Bin(Binary(b.clone())),
                    None => Val::Json(Value::Object(map)),
                }
            }
            Value::Object(map) => Val::Obj(
                map.into_iter()
                    .map(|(k, v)| (k, Val::resolve(v, attachments)))
                    .collect(),
            ),
            Value::Array(items) => Val::Arr(
                items
                    .into_iter()
                    .map(|v| Val::resolve(v, attachments))
                    .collect(),
            ),
            other => Val::Json(other),
        }
    }

    /// Every argument of `args`, resolved.
    fn from_args(args: &Args) -> Vec<Val> {
        args.decode::<Vec<Value>>()
            .unwrap_or_default()
            .into_iter()
            .map(|v| Val::resolve(v, args.attachments()))
            .collect()
    }
}

impl Serialize for Val {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Val::Json(v) => v.serialize(s),
            Val::Bin(b) => b.serialize(s),
            Val::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Val::Obj(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

pub(crate) fn ack_json(ack: AckSender, value: Value) {
    let _ = ack.send(&(value,));
}

pub(crate) fn decode_opts(args: &Args) -> BroadcastOpts {
    args.get::<BroadcastOpts>(0).unwrap_or_default()
}

/// The `args` of the options as event arguments, one each. Their binary
/// placeholders number the attachments of the packet that carried the options:
/// resolved, they travel along (renumbered).
pub(crate) fn event_args(opts: &BroadcastOpts, packet: &Args) -> Args {
    let items: Vec<Val> = opts
        .args
        .iter()
        .map(|v| Val::resolve(v.clone(), packet.attachments()))
        .collect();
    Args::spread(&items).unwrap_or_default()
}

fn main_namespace(io: &Server, reasons: Reasons) {
    let io2 = io.clone();
    io.ns("/", move |socket: Socket| {
        let io = io2.clone();
        let reasons = reasons.clone();
        async move {
            socket.use_middleware(|_s, event, _args| {
                if event == "forbidden" {
                    Err("forbidden event".into())
                } else {
                    Ok(())
                }
            });
            socket.on_error(|s, message| {
                let _ = s.emit("error-seen", &(message,));
            });
            register_echo(&socket);
            socket.on("join", |s: Socket, args: Args, ack: AckSender| async move {
                match args.get::<Value>(0) {
                    Ok(Value::Array(rooms)) => s.join(
                        rooms
                            .iter()
                            .filter_map(|r| r.as_str().map(String::from))
                            .collect::<Vec<_>>(),
                    ),
                    Ok(Value::String(room)) => s.join(room),
                    _ => {}
                }
                ack_json(ack, json!(s.rooms()));
            });
            socket.on(
                "leave",
                |s: Socket, Data(room): Data<String>, ack: AckSender| async move {
                    s.leave(&room);
                    ack_json(ack, json!(s.rooms()));
                },
            );
            let io_b = io.clone();
            socket.on("broadcast", move |s: Socket, args: Args, ack: AckSender| {
                let io = io_b.clone();
                async move {
                    let o = decode_opts(&args);
                    let mut op = if o.broadcast {
                        s.broadcast()
                    } else {
                        io.sockets().to(Vec::<String>::new())
                    };
                    op = op.to(o.to.clone()).except(o.except.clone());
                    if o.local {
                        op = op.local();
                    }
                    if o.volatile {
                        op = op.volatile();
                    }
                    if let Some(compress) = o.compress {
                        op = op.compress(compress);
                    }
                    let _ = op.emit(&o.event, event_args(&o, &args));
                    ack_json(ack, json!("ok"));
                }
            });
            socket.on(
                "self-emit",
                |s: Socket, args: Args, ack: AckSender| async move {
                    let o = decode_opts(&args);
                    let _ = s
                        .compress(o.compress.unwrap_or(true))
                        .emit(&o.event, event_args(&o, &args));
                    ack_json(ack, json!("ok"));
                },
            );
            let io_c = io.clone();
            socket.on(
                "broadcast-with-ack",
                move |_s: Socket, args: Args, ack: AckSender| {
                    let io = io_c.clone();
                    async move {
                        let o = decode_opts(&args);
                        let op = io
                            .sockets()
                            .to(o.to.clone())
                            .timeout(Duration::from_millis(o.timeout.unwrap_or(1000)));
                        let (err, responses) =
                            match op.emit_with_ack(&o.event, event_args(&o, &args)).await {
                                Ok(r) => (Value::Null, r),
                                Err(rsio::server::BroadcastEmitError::Ack(e)) => {
                                    (json!(e.to_string()), e.responses)
                                }
                                Err(e) => (json!(e.to_string()), vec![]),
                            };
                        let responses: Vec<Val> = responses
                            .iter()
                            .map(|a| {
                                Val::from_args(a)
                                    .into_iter()
                                    .next()
                                    .unwrap_or(Val::Json(Value::Null))
                            })
                            .collect();
                        let body = Val::Obj(vec![
                            ("err".into(), Val::Json(err)),
                            ("responses".into(), Val::Arr(responses)),
                        ]);
                        let _ = ack.send(&(body,));
                    }
                },
            );
            socket.on(
                "emit-with-ack",
                |s: Socket, args: Args, ack: AckSender| async move {
                    let o = decode_opts(&args);
                    let res = s
                        .timeout(Duration::from_millis(o.timeout.unwrap_or(1000)))
                        .emit_with_ack(&o.event, event_args(&o, &args))
                        .await;
                    let (err, response) = match res {
                        Ok(r) => (Value::Null, Val::from_args(&r)),
                        Err(e) => (json!(e.to_string()), vec![]),
                    };
                    let body = Val::Obj(vec![
                        ("err".into(), Val::Json(err)),
                        ("response".into(), Val::Arr(response)),
                    ]);
                    let _ = ack.send(&(body,));
                },
            );
            let io_f = io.clone();
            socket.on(
                "fetch-sockets",
                move |_s: Socket, args: Args, ack: AckSender| {
                    let io = io_f.clone();
                    async move {
                        let o = decode_opts(&args);
                        let sockets = io
                            .sockets()
                            .to(o.in_rooms.clone())
                            .fetch_sockets()
                            .await
                            .unwrap_or_default();
                        let list: Vec<Value> = sockets
                            .iter()
                            .map(|s| {
                                let mut rooms = s.rooms.clone();
                                rooms.sort();
                                let mut entry =
                                    json!({"id": s.id.to_string(), "rooms": rooms, "data": s.data});
                                if o.handshake {
                                    entry["handshake"] =
                                        s.handshake.as_ref().map_or(Value::Null, |h| {
                                            json!({
                                                "auth": h.auth(),
                                                "query": h.query(),
                                                "address": h.address().map(|a| a.ip().to_string()),
                                            })
                                        });
                                }
                                entry
                            })
                            .collect();
                        ack_json(ack, json!(list));
                    }
                },
            );
            let io_j = io.clone();
            socket.on(
                "sockets-join",
                move |_s: Socket, args: Args, ack: AckSender| {
                    let io = io_j.clone();
                    async move {
                        let o = decode_opts(&args);
                        io.sockets()
                            .to(o.in_rooms.clone())
                            .sockets_join(o.rooms.clone());
                        ack_json(ack, json!("ok"));
                    }
                },
            );
            let io_l = io.clone();
            socket.on(
                "sockets-leave",
                move |_s: Socket, args: Args, ack: AckSender| {
                    let io = io_l.clone();
                    async move {
                        let o = decode_opts(&args);
                        io.sockets()
                            .to(o.in_rooms.clone())
                            .sockets_leave(o.rooms.clone());
                        ack_json(ack, json!("ok"));
                    }
                },
            );
            let io_d = io.clone();
            socket.on(
                "disconnect-sockets",
                move |_s: Socket, args: Args, ack: AckSender| {
                    let io = io_d.clone();
                    async move {
                        let o = decode_opts(&args);
                        ack_json(ack, json!("ok"));
                        io.sockets()
                            .to(o.in_rooms.clone())
                            .disconnect_sockets(o.close);
                    }
                },
            );
            socket.on(
                "set-data",
                |s: Socket, Data(value): Data<Value>, ack: AckSender| async move {
                    s.set_data(&value);
                    ack_json(ack, json!("ok"));
                },
            );
            socket.on(
                "get-data",
                |s: Socket, _args: Args, ack: AckSender| async move {
                    ack_json(ack, s.data_value());
                },
            );
            socket.on(
                "server-disconnect",
                |s: Socket, Data(close): Data<bool>| async move {
                    s.disconnect(close);
                },
            );
            let ordered = Arc::new(Mutex::new(Vec::<Value>::new()));
            let ordered_in = ordered.clone();
            socket.on("ordered", move |_s: Socket, Data(n): Data<Value>| {
                ordered_in.lock().unwrap().push(n);
                async {}
            });
            socket.on(
                "get-ordered",
                move |_s: Socket, _args: Args, ack: AckSender| {
                    let list = ordered.lock().unwrap().clone();
                    async move { ack_json(ack, json!(list)) }
                },
            );
            socket.on(
                "slow",
                |_s: Socket, Data(ms): Data<u64>, ack: AckSender| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    ack_json(ack, json!("slow"));
                },
            );
            let reasons_q = reasons.clone();
            socket.on(
                "last-disconnect",
                move |_s: Socket, Data(id): Data<String>, ack: AckSender| {
                    let value = reasons_q
                        .lock()
                        .unwrap()
                        .get(&id)
                        .cloned()
                        .unwrap_or(Value::Null);
                    async move { ack_json(ack, value) }
                },
            );
            socket.on(
                "recovered",
                |s: Socket, _args: Args, ack: AckSender| async move {
                    ack_json(ack, json!(s.recovered()));
                },
            );
            // Names of the events sent to this socket (catch-all outgoing listener):
            // the first KEPT_RECORDS of them.
            let outgoing = Arc::new(Mutex::new(Vec::<String>::new()));
            let seen = outgoing.clone();
            socket.on_any_outgoing(move |_s, event, _args| {
                let mut seen = seen.lock().unwrap();
                if seen.len() < KEPT_RECORDS {
                    seen.push(event.to_string())
                }
            });
            socket.on(
                "outgoing",
                move |_s: Socket, _args: Args, ack: AckSender| {
                    let list = outgoing.lock().unwrap().clone();
                    async move { ack_json(ack, json!(list)) }
                },
            );
            record_disconnect(&socket, reasons);
        }
    });
}

/// Records `{reason, roomsAtDisconnecting}` under the socket's id when it leaves.
fn record_disconnect(socket: &Socket, reasons: Reasons) {
    let at_disconnecting = Arc::new(Mutex::new(Vec::<String>::new()));
    let at_d = at_disconnecting.clone();
    socket.on_disconnecting(move |s, _reason| {
        let mut rooms = s.rooms();
        rooms.sort();
        *at_d.lock().unwrap() = rooms;
    });
    socket.on_disconnect(move |s, reason| {
        let rooms = at_disconnecting.lock().unwrap().clone();
        reasons.lock().unwrap().insert(
            s.id().to_string(),
            json!({"reason": reason.as_str(), "roomsAtDisconnecting": rooms}),
        );
    });
}

fn register_echo(socket: &Socket) {
    socket.on("echo", |s: Socket, args: Args, ack: AckSender| async move {
        if ack.is_requested() {
            let _ = ack.send(args);
        } else {
            let _ = s.emit("echo", args);
        }
    });
}

/// The packet format named on the command line (`--parser`).
pub fn parser(name: &str) -> rsio::parser::Parser {
    match name {
        "msgpack" => rsio::parser::Parser::Msgpack,
        _ => rsio::parser::Parser::Default,
    }
}

/// The interop server's options (recovery is dropped by the cluster runtime).
pub fn server_config() -> ServerConfig {
    let mut recovery = RecoveryConfig::default();
    recovery.max_disconnection_duration = Duration::from_millis(5000);
    recovery.skip_middlewares = true;
    Server::builder()
        .ping_interval(Duration::from_millis(1000))
        .ping_timeout(Duration::from_millis(1000))
        .cors(CorsOptions::new(CorsOrigin::Any))
        .connect_timeout(Duration::from_millis(2000))
        .connection_state_recovery(recovery)
        .config()
}

/// Registers every namespace and handler on `io`; `worker` is this worker's
/// index in a cluster.
pub fn install(io: &Server, worker: Option<usize>) {
    let reasons: Reasons = Arc::default();
    main_namespace(io, reasons.clone());

    let auth = io.of("/auth");
    auth.use_middleware(|socket: Socket| async move {
        if socket
            .handshake()
            .auth()
            .get("token")
            .and_then(Value::as_str)
            != Some("secret")
        {
            return Err(ConnectError::new("unauthorized").with_data(json!({"code": 401})));
        }
        socket.set_data(&json!({"user": "alice"}));
        Ok(())
    });
    let reasons_auth = reasons.clone();
    auth.on_connection(move |socket: Socket| {
        record_disconnect(&socket, reasons_auth.clone());
        async move {
            let _ = socket.emit("welcome", &(socket.data_value(),));
        }
    });

    let dynamic = io.dynamic_namespace(|name, _auth| {
        name.strip_prefix("/dyn-")
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    dynamic.use_middleware(|socket: Socket| async move {
        if socket.ns() == "/dyn-0" {
            Err(ConnectError::new("dyn-0 refused"))
        } else {
            Ok(())
        }
    });
    dynamic.on_connection(|socket: Socket| async move {
        let _ = socket.emit("hello", &(socket.ns(),));
    });

    io.ns("/custom", move |socket: Socket| {
        record_disconnect(&socket, reasons.clone());
        async move {
            let _ = socket.emit("auth", &(socket.handshake().auth().clone(),));
            register_echo(&socket);
        }
    });
    if let Some(index) = worker {
        crate::cluster::install_cluster(io, index);
    }
}
