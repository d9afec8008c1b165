//! The interop server's extra handlers for the cluster tests: which worker
//! answered, `serverSideEmit` with acks, the number of servers.

use std::time::Duration;

use rsio::{
    parser::Args,
    server::{AckSender, Server, ServerSideEmitError, Socket},
};
use serde_json::{json, Value};

use crate::app::{ack_json, decode_opts, event_args};

/// Extra handlers for the cluster tests.
pub fn install_cluster(io: &Server, index: usize) {
    second_namespace(io, index);
    let root = io.sockets();
    root.on_server_side(
        "which-worker",
        move |_args: Args, ack: AckSender| async move {
            let _ = ack.send(&(index,));
        },
    );
    // Never acknowledges: for the timeout of server_side_emit_with_ack.
    root.on_server_side("never-answers", |_args: Args, _ack: AckSender| async {});
    // Worker 0 stays silent, the others answer: for partial responses.
    root.on_server_side(
        "all-but-worker-0",
        move |_args: Args, ack: AckSender| async move {
            if index != 0 {
                let _ = ack.send(&(index,));
            }
        },
    );
    // Test-only: a handler that blocks the worker's thread (its event loop) for 60 s,
    // for the primary's heartbeat check. Off unless the tests ask for it.
    let blocking = std::env::var_os("RSIO_INTEROP_BLOCKING_HANDLER").is_some();
    let io = io.clone();
    io.clone().sockets().on_connection(move |socket: Socket| {
        let io = io.clone();
        async move {
            if blocking {
                socket.on(
                    "block",
                    |_s: Socket, _args: Args, ack: AckSender| async move {
                        let _ = ack.send(&("blocking",));
                        std::thread::sleep(Duration::from_secs(60));
                    },
                );
            }
            socket.on(
                "worker",
                move |_s: Socket, _args: Args, ack: AckSender| async move {
                    ack_json(ack, json!(index));
                },
            );
            let io_s = io.clone();
            socket.on(
                "server-side-emit",
                move |_s: Socket, args: Args, ack: AckSender| {
                    let io = io_s.clone();
                    async move {
                        let o = decode_opts(&args);
                        let timeout = Duration::from_millis(o.timeout.unwrap_or(1000));
                        let res = io
                            .sockets()
                            .server_side_emit_with_ack(&o.event, event_args(&o, &args), timeout)
                            .await;
                        let first = |list: &[Args]| {
                            list.iter()
                                .map(|a| a.get::<Value>(0).unwrap_or(Value::Null))
                                .collect::<Vec<_>>()
                        };
                        let value = match res {
                            Ok(list) => json!({"err": null, "responses": first(&list)}),
                            Err(ServerSideEmitError::Timeout(p)) => {
                                json!({"err": p.to_string(), "responses": first(&p.responses)})
                            }
                            Err(e) => json!({"err": e.to_string(), "responses": []}),
                        };
                        ack_json(ack, value);
                    }
                },
            );
            let io_c = io.clone();
            socket.on(
                "server-count",
                move |_s: Socket, _args: Args, ack: AckSender| {
                    let n = io_c.sockets().adapter().server_count();
                    async move { ack_json(ack, json!(n)) }
                },
            );
        }
    });
}

/// `/second`: rooms of the same names as `/`'s are other rooms (room interest
/// is kept per namespace). `join` (a room), `broadcast` ({event, args, to})
/// and `worker`, each acknowledged.
fn second_namespace(io: &Server, index: usize) {
    let io2 = io.clone();
    io.ns("/second", move |socket: Socket| {
        let io = io2.clone();
        async move {
            socket.on("join", |s: Socket, args: Args, ack: AckSender| async move {
                if let Ok(room) = args.get::<String>(0) {
                    s.join(room);
                }
                ack_json(ack, json!(s.rooms()));
            });
            socket.on(
                "worker",
                move |_s: Socket, _args: Args, ack: AckSender| async move {
                    ack_json(ack, json!(index));
                },
            );
            socket.on(
                "broadcast",
                move |_s: Socket, args: Args, ack: AckSender| {
                    let io = io.clone();
                    async move {
                        let o = decode_opts(&args);
                        let _ = io
                            .of("/second")
                            .to(o.to.clone())
                            .emit(&o.event, event_args(&o, &args));
                        ack_json(ack, json!("ok"));
                    }
                },
            );
        }
    });
}
