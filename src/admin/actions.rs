//! The page's operations (`emit`, `join`, `leave`, `_disconnect`), applied to the
//! sockets of every worker through the adapter, and the list of every socket of
//! every worker (`all_sockets`).
//!
//! `fetch_sockets` tells only ids, rooms and data of other workers' sockets; the
//! page also shows their transport, Engine.IO id and handshake, so each worker
//! describes its own sockets in answer to a server-side emit on the admin
//! namespace: the same round trip through the primary as a fetch.

use std::{sync::Arc, time::Duration};

use serde_json::Value;

use super::events::Hub;
use crate::{
    parser::Args,
    server::{BroadcastOperator, Namespace, ServerSideEmitError, Socket},
};

/// The server-side event by which a worker asks the others for their sockets.
const SOCKETS_REQUEST: &str = "rsio:admin:sockets";
/// How long a worker waits for the others' sockets.
const SOCKETS_TIMEOUT: Duration = Duration::from_secs(3);

/// The server-side event by which a worker with a page open tells the others.
const PAGE_OPEN: &str = "rsio:admin:page";

/// Tells the other workers that a page is open here: they send their events and
/// stats for a while (see [`Hub::watched`]).
pub fn announce_page(hub: &Hub) {
    if let Some(admin) = hub.admin() {
        if let Err(err) = admin.server_side_emit(PAGE_OPEN, Args::empty()) {
            tracing::debug!(target: "rsio::admin", "cannot announce the page: {err}");
        }
    }
}

/// Answers the other workers' requests for this worker's sockets, and notes
/// their pages.
pub fn answer_socket_requests(hub: &Arc<Hub>) {
    let Some(admin) = hub.admin() else { return };
    let h = hub.clone();
    admin.on_server_side(PAGE_OPEN, move |_args, _ack| {
        h.watched_elsewhere();
        async {}
    });
    let hub = hub.clone();
    admin.on_server_side(SOCKETS_REQUEST, move |_args, ack| {
        let sockets = hub.local_sockets();
        async move {
            let _ = ack.send(&(sockets,));
        }
    });
}

/// Every socket of every worker that answers within [`SOCKETS_TIMEOUT`]. The
/// others are told of the page first (same path, so before the request), so that
/// they send what happens after their answer.
pub async fn all_sockets(hub: &Arc<Hub>) -> Vec<Value> {
    announce_page(hub);
    let mut out = hub.local_sockets();
    let Some(admin) = hub.admin() else { return out };
    let answers = match admin
        .server_side_emit_with_ack(SOCKETS_REQUEST, Args::empty(), SOCKETS_TIMEOUT)
        .await
    {
        Ok(answers) => answers,
        Err(ServerSideEmitError::Timeout(partial)) => {
            tracing::warn!(target: "rsio::admin", "{} workers did not list their sockets", partial.missing);
            partial.responses
        }
        Err(err) => {
            tracing::warn!(target: "rsio::admin", "cannot ask the other workers for their sockets: {err}");
            Vec::new()
        }
    };
    for answer in answers {
        if let Ok(Value::Array(sockets)) = answer.get::<Value>(0) {
            out.extend(sockets);
        }
    }
    out
}

/// The handlers of the page's operations on the admin socket `socket`.
pub fn register(hub: &Arc<Hub>, socket: &Socket) {
    let h = hub.clone();
    socket.on("emit", move |_: Socket, args: Args| {
        emit(&h, &args);
        async {}
    });
    let h = hub.clone();
    socket.on("join", move |_: Socket, args: Args| {
        if let Some((op, room)) = room_operation(&h, &args) {
            op.sockets_join(room);
        }
        async {}
    });
    let h = hub.clone();
    socket.on("leave", move |_: Socket, args: Args| {
        if let Some((op, room)) = room_operation(&h, &args) {
            op.sockets_leave(room);
        }
        async {}
    });
    let h = hub.clone();
    socket.on("_disconnect", move |_: Socket, args: Args| {
        // (nsp, close, filter?)
        let close = args.get::<bool>(1).unwrap_or(false);
        if let Some(op) = target(&h, &args, 2) {
            op.disconnect_sockets(close);
        }
        async {}
    });
}

/// The namespace named by argument 0, narrowed to the room or socket id of
/// argument `filter_at` when one is given (Node's `io.of(nsp).in(filter)`).
fn target(hub: &Hub, args: &Args, filter_at: usize) -> Option<BroadcastOperator> {
    let name: String = args.get(0).ok()?;
    // Only namespaces that exist: the page cannot create new ones.
    let Some(ns) = hub.namespace(&name) else {
        tracing::debug!(target: "rsio::admin", "no namespace {name:?}");
        return None;
    };
    Some(narrow(&ns, args.get::<Value>(filter_at).ok()))
}

fn narrow(ns: &Namespace, filter: Option<Value>) -> BroadcastOperator {
    match filter {
        Some(Value::String(room)) if !room.is_empty() => ns.to(room),
        Some(Value::Array(rooms)) if !rooms.is_empty() => ns.to(rooms
            .into_iter()
            .filter_map(|r| r.as_str().map(str::to_string))
            .collect::<Vec<_>>()),
        _ => ns.to(Vec::<String>::new()),
    }
}

/// `(nsp, room, filter?)` of `join` and `leave`.
fn room_operation(hub: &Hub, args: &Args) -> Option<(BroadcastOperator, String)> {
    let room: String = args.get(1).ok()?;
    Some((target(hub, args, 2)?, room))
}

/// `(nsp, filter, event, ...args)`: the event to the selected sockets.
fn emit(hub: &Hub, args: &Args) {
    let Ok(event) = args.get::<String>(2) else {
        return;
    };
    let Some(op) = target(hub, args, 1) else {
        return;
    };
    let mut rest = Args::empty();
    for i in 3..args.len() {
        match args.get::<Value>(i) {
            Ok(v) if rest.push(&v).is_ok() => {}
            _ => return,
        }
    }
    if let Err(err) = op.emit(&event, rest) {
        tracing::debug!(target: "rsio::admin", "emit {event:?} from the admin UI: {err}");
    }
}
