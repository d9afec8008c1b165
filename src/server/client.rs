//! One Engine.IO connection as Socket.IO sees it: the packet decoder, the
//! namespaces it joined, and the routing of its packets.

use std::{
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use serde_json::value::RawValue;
use tracing::debug;

use super::{
    guard::{self, Guest},
    handler::{run_inline, ConnectError},
    handshake::Handshake,
    reason::DisconnectReason,
    socket::{encode, Socket},
    v2_client, ServerInner,
};
use crate::{
    adapter::{EncodedPacket, Restored, RoomHold},
    engine::{CloseReason, EngineHandler, Message, Session, Sid},
    parser::{Decoder, Packet, PacketData},
};

impl ClientInner {
    /// `nsp`'s CONNECT is through (or refused); the list's memory is given back
    /// once empty, as it stays so for the rest of a connection's life.
    fn connected(&mut self, nsp: &str) {
        self.connecting.retain(|n| n != nsp);
        if self.connecting.is_empty() {
            self.connecting = Vec::new();
        }
    }
}

#[derive(Default)]
struct ClientInner {
    decoder: Decoder,
    sockets: Vec<Socket>,
    /// Namespaces whose CONNECT is in the middlewares.
    connecting: Vec<String>,
    connected_once: bool,
    /// The `connect_timeout` task, ended at the first connection (as Node clears
    /// its timer): it would otherwise outlive the handshake by the whole timeout.
    connect_deadline: Option<tokio::task::AbortHandle>,
}

/// The Socket.IO state of one Engine.IO session.
#[derive(Default)]
pub struct ClientState {
    inner: Mutex<ClientInner>,
}

impl ClientState {
    fn lock(&self) -> MutexGuard<'_, ClientInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn remove_socket(&self, nsp: &str) {
        self.lock().sockets.retain(|s| s.ns() != nsp);
    }

    /// The sockets of this connection, one per namespace.
    pub fn sockets(&self) -> Vec<Socket> {
        self.lock().sockets.clone()
    }
}

/// Closes a connection after a protocol violation: every socket leaves with
/// "forced server close", then the Engine.IO session closes.
fn reject_connection(session: &Arc<Session<ClientState>>) {
    for socket in session.data.sockets() {
        socket.on_close(DisconnectReason::ForcedServerClose);
    }
    session.close();
}

/// `socket.disconnect(true)`: every socket of the connection leaves with a
/// DISCONNECT packet, then the connection closes once they are delivered.
pub(crate) fn close_connection(session: &Arc<Session<ClientState>>) {
    for socket in session.data.sockets() {
        socket.disconnect(false);
    }
    session.close();
}

/// The [`EngineHandler`] of a Socket.IO server.
pub struct ClientHandler {
    pub(crate) server: Arc<ServerInner>,
}

impl EngineHandler for ClientHandler {
    type Data = ClientState;

    fn on_open(&self, session: &Arc<Session<ClientState>>) {
        session.data.lock().decoder = Decoder::with_parser(
            self.server.config.parser,
            self.server.config.max_attachments,
        );
        let timeout = self.server.config.connect_timeout;
        let deadline = tokio::spawn(connect_deadline(session.clone(), timeout));
        session.data.lock().connect_deadline = Some(deadline.abort_handle());
        if session.is_v3() {
            // A Socket.IO v2 client joins the main namespace without a CONNECT.
            connect(&self.server, session, "/".into(), serde_json::json!({}));
        }
    }

    fn on_message(&self, session: &Arc<Session<ClientState>>, message: Message) {
        let decoded = {
            let mut client = session.data.lock();
            match message {
                Message::Text(text) => client.decoder.decode_text(text),
                Message::Binary(data) => client.decoder.decode_binary(data),
            }
        };
        match decoded {
            Ok(Some(packet)) => self.route(session, packet),
            Ok(None) => {}
            Err(err) => {
                debug!(target: "socket.io:client", sid = %session.sid(), "parse error: {err}");
                session.abort(CloseReason::ParseError);
            }
        }
    }

    fn on_close(&self, session: &Arc<Session<ClientState>>, reason: CloseReason) {
        let sockets = std::mem::take(&mut session.data.lock().sockets);
        for socket in sockets {
            socket.on_close(reason.into());
        }
    }
}

async fn connect_deadline(session: Arc<Session<ClientState>>, timeout: Duration) {
    tokio::select! {
        _ = tokio::time::sleep(timeout) => {
            let idle = {
                let c = session.data.lock();
                !c.connected_once && c.connecting.is_empty()
            };
            if idle {
                debug!(target: "socket.io:client", sid = %session.sid(), "no namespace joined in time");
                session.close();
            }
        }
        _ = session.closed() => {}
    }
}

impl ClientHandler {
    fn route(&self, session: &Arc<Session<ClientState>>, mut packet: Packet) {
        // A v2 client's CONNECT carries its auth as the namespace's query.
        let mut v2_auth = None;
        if session.is_v3() && matches!(packet.data, PacketData::Connect(_)) {
            let (nsp, auth) = v2_client::split_connect_nsp(&packet.nsp);
            packet.nsp = nsp.into();
            v2_auth = Some(auth);
        }
        let (socket, connecting) = {
            let c = session.data.lock();
            (
                c.sockets.iter().find(|s| s.ns() == packet.nsp).cloned(),
                c.connecting.iter().any(|n| *n == packet.nsp),
            )
        };
        match (packet.data, socket) {
            (PacketData::Connect(auth), None) if !connecting => {
                let auth = v2_auth.unwrap_or_else(|| {
                    auth.and_then(|raw| serde_json::from_str(raw.get()).ok())
                        .unwrap_or_else(|| serde_json::json!({}))
                });
                connect(&self.server, session, packet.nsp.into_owned(), auth)
            }
            (PacketData::Disconnect, Some(socket)) => {
                socket.on_close(DisconnectReason::ClientNamespaceDisconnect)
            }
            (PacketData::Event { event, args, ack }, Some(socket)) => {
                socket.on_event(event, args, ack)
            }
            (PacketData::Ack { ack, args }, Some(socket)) => socket.on_ack(ack, args),
            (data, _) => {
                debug!(target: "socket.io:client", sid = %session.sid(), nsp = &*packet.nsp, ?data, "packet in an invalid state");
                reject_connection(session);
            }
        }
    }
}

fn connect(
    server: &Arc<ServerInner>,
    session: &Arc<Session<ClientState>>,
    nsp: String,
    auth: serde_json::Value,
) {
    let Some(ns) = server.namespace_for(&nsp, &auth) else {
        debug!(target: "socket.io:client", nsp, "invalid namespace");
        let packet = Packet::connect_error(nsp, "Invalid namespace", None);
        session.send_all(encode(&packet, server.config.parser).0.iter().cloned());
        return;
    };
    session.data.lock().connecting.push(nsp.clone());
    let recovery = server.config.connection_state_recovery;
    let session = session.clone();
    if ns.is_ready() {
        join_namespace(ns, session, auth, recovery);
    } else {
        // Its new-namespace listeners are still running (they may add middlewares).
        run_inline(Box::pin(async move {
            ns.wait_ready().await;
            join_namespace(ns, session, auth, recovery);
        }));
    }
}

/// Restores the session the client asks for (if any), then accepts it.
fn join_namespace(
    ns: crate::server::Namespace,
    session: Arc<Session<ClientState>>,
    auth: serde_json::Value,
    recovery: Option<crate::adapter::RecoveryConfig>,
) {
    let credentials = recovery.and_then(|_| {
        let pid = auth.get("pid")?.as_str()?.to_string();
        let offset = auth.get("offset")?.as_str()?.to_string();
        Some((pid, offset))
    });
    match credentials {
        // Restoring may ask another process (the cluster's primary): continue when it answers.
        Some((pid, offset)) => {
            crate::metrics::add(crate::metrics::counter::RECOVERY_ATTEMPTS, 1);
            let restore = ns.adapter().restore_session(&pid, &offset);
            run_inline(Box::pin(async move {
                let restored = restore.await;
                accept(ns, session, auth, recovery, restored);
            }));
        }
        None => accept(ns, session, auth, recovery, None),
    }
}

/// Builds the socket (restored or new), runs the middlewares, then joins it.
fn accept(
    ns: crate::server::Namespace,
    session: Arc<Session<ClientState>>,
    auth: serde_json::Value,
    recovery: Option<crate::adapter::RecoveryConfig>,
    restored: Option<Restored>,
) {
    let handshake = Handshake::new(session.request().clone(), auth);
    let recovered = restored.is_some();
    if recovered {
        crate::metrics::add(crate::metrics::counter::RECOVERY_SUCCESSES, 1);
    }
    let (id, pid, data, rooms, missed, horizon, hold) = match restored {
        Some(r) => (
            r.session.id,
            Some(r.session.pid),
            r.session.data,
            r.session.rooms,
            r.missed,
            r.horizon,
            r.hold,
        ),
        None => (
            // Node gives a v2 client's main-namespace socket the engine's sid,
            // which is the id the client itself reports.
            if session.is_v3() && ns.name() == "/" {
                session.sid()
            } else {
                Sid::random()
            },
            recovery.map(|_| Sid::random()),
            serde_json::json!({}),
            Vec::new(),
            Vec::new(),
            None,
            None,
        ),
    };
    let socket = Socket::new(id, pid, ns.clone(), session, handshake, recovered, data);
    let joined = Joined {
        rooms,
        missed,
        horizon,
        hold,
    };
    let skip = recovered && recovery.is_some_and(|r| r.skip_middlewares);
    let middlewares = if skip {
        Vec::new()
    } else {
        ns.handlers().middlewares
    };
    if middlewares.is_empty() {
        finish_connect(socket, joined);
        return;
    }
    let connecting = socket.clone();
    guard::run(Guest::Connecting(&connecting), || {
        Box::pin(async move {
            for middleware in middlewares {
                if let Err(err) = middleware(socket.clone()).await {
                    refuse(&socket, err);
                    if socket.recovered() {
                        socket.namespace().adapter().confirm_rooms(&joined.rooms);
                    }
                    return;
                }
            }
            finish_connect(socket, joined);
        })
    });
}

/// What a socket brings back from a restored session.
struct Joined {
    rooms: Vec<String>,
    missed: Vec<EncodedPacket>,
    horizon: Option<u64>,
    /// Its rooms held in the interest hints until it joined them (released
    /// when dropped: joined, refused or closed).
    hold: Option<Arc<RoomHold>>,
}

pub(super) fn refuse(socket: &Socket, err: ConnectError) {
    socket.close_acks();
    let session = &socket.0.session;
    session.data.lock().connected(socket.ns());
    // Rooms a middleware joined before refusing are left, as Node's cleanup
    // does (no lock held: room listeners may run).
    socket.namespace().adapter().del_all(socket.id());
    debug!(target: "socket.io:client", nsp = socket.ns(), "refused: {}", err.message);
    let packet = if session.is_v3() {
        v2_client::connect_error(socket.ns(), &err)
    } else {
        let data = err
            .data
            .and_then(|d| RawValue::from_string(d.to_string()).ok());
        Packet::connect_error(socket.ns(), &err.message, data.as_deref())
    };
    session.send_all(
        encode(&packet, socket.namespace().parser())
            .0
            .iter()
            .cloned(),
    );
}

fn finish_connect(socket: Socket, joined: Joined) {
    let Joined {
        rooms,
        mut missed,
        horizon,
        hold,
    } = joined;
    let session = socket.0.session.clone();
    let ns = socket.namespace().clone();
    {
        let mut c = session.data.lock();
        c.connected(ns.name());
        if session.is_closed() {
            drop(c);
            socket.close_acks();
            // Rooms a middleware joined: nobody is left to leave them.
            ns.adapter().del_all(socket.id());
            if socket.recovered() {
                ns.adapter().confirm_rooms(&rooms);
            }
            return;
        }
        c.sockets.push(socket.clone());
        c.connected_once = true;
        if let Some(deadline) = c.connect_deadline.take() {
            deadline.abort();
        }
        // Registered and marked connected under the client lock, so a concurrent
        // close sees a connected socket and closes it.
        ns.add_socket(socket.clone());
        socket.set_connected();
    }
    // Joined with the client lock released: room listeners run here, and they
    // may call back into rsio (even disconnect this socket).
    let mut all = Vec::with_capacity(1 + rooms.len());
    all.push(socket.id().to_string());
    all.extend(rooms);
    // A restored socket also gets the packets that reached this server while
    // its restore (and its middlewares) were on their way.
    let late = match horizon {
        Some(horizon) => ns.adapter().join_restored(socket.id(), &all, horizon),
        None => {
            ns.adapter().add_all(socket.id(), &all);
            Vec::new()
        }
    };
    // Its rooms count it in now (or, closed meanwhile, it needs them no more).
    drop(hold);
    if !socket.connected() {
        // Closed meanwhile: that close may have left the rooms before they were
        // joined, so leave them again (leaving twice is harmless).
        ns.adapter().del_all(socket.id());
        return;
    }
    missed.extend(late);
    socket.report_session();
    let reply = match socket.pid() {
        // A v2 client's CONNECT reply has no payload.
        _ if session.is_v3() => None,
        Some(pid) => Some(format!("{{\"sid\":\"{}\",\"pid\":\"{pid}\"}}", socket.id())),
        None => Some(format!("{{\"sid\":\"{}\"}}", socket.id())),
    };
    let payload = reply.and_then(|r| RawValue::from_string(r).ok());
    socket.send_packet(&Packet::connect(ns.name(), payload));
    for packet in &missed {
        socket.send_encoded(packet);
    }
    debug!(target: "socket.io:client", id = %socket.id(), nsp = ns.name(), recovered = socket.recovered(), "connected");
    for handler in ns.handlers().connection {
        guard::run(Guest::Socket(&socket, "connection"), || {
            handler(socket.clone())
        });
    }
}
