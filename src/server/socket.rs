//! `Socket`: one client's membership of one namespace.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard,
    },
};

use futures_util::future::BoxFuture;
use serde::{de::DeserializeOwned, Serialize};
use tracing::{debug, error};

use super::{
    ack::{AckSender, AckWaiter, EmitError, IntoArgs},
    broadcast::BroadcastOperator,
    client::ClientState,
    extract::{boxed_event, Handler},
    guard::{self, Guest},
    handler::{AnyHandler, BoxedEventHandler, DisconnectHandler, ErrorHandler, PacketMiddleware},
    handshake::Handshake,
    namespace::Namespace,
    reason::DisconnectReason,
    rooms::IntoRooms,
    state::Extensions,
};
use crate::{
    adapter::{BroadcastOptions, EncodedPacket, PersistedSession, SocketId},
    engine::{BroadcastCompress, Compress, Frame, Queued, Session, Sid},
    parser::{is_reserved_event, msgpack, Args, Packet, Parser},
};

#[derive(Default)]
pub(super) struct SocketState {
    /// Event handlers by name, looked up by a linear scan: a socket has a few
    /// (a chat, five or so), where a hash map took twice the memory for every
    /// connected client and was no faster.
    /// Names are usually literals, kept without a copy.
    handlers: Vec<(Cow<'static, str>, BoxedEventHandler)>,
    /// Boxed on first use: a socket lives as long as its client, and many
    /// register none of these.
    listeners: Option<Box<Listeners>>,
    pub(super) acks: HashMap<u64, AckWaiter>,
    /// Set when the socket leaves (or is refused): no ack can come any more,
    /// so no waiter is taken in.
    pub(super) acks_closed: bool,
    data: serde_json::Value,
}

impl SocketState {
    fn listeners_mut(&mut self) -> &mut Listeners {
        self.listeners.get_or_insert_with(Box::default)
    }

    /// A copy of one list of listeners (they run without the lock held).
    fn listeners<T: Clone>(&self, list: impl FnOnce(&Listeners) -> &Vec<T>) -> Vec<T> {
        self.listeners
            .as_deref()
            .map(list)
            .cloned()
            .unwrap_or_default()
    }
}

#[derive(Default)]
struct Listeners {
    any_incoming: Vec<AnyHandler>,
    any_outgoing: Vec<AnyHandler>,
    disconnecting: Vec<DisconnectHandler>,
    disconnect: Vec<DisconnectHandler>,
    errors: Vec<ErrorHandler>,
    middlewares: Vec<PacketMiddleware>,
}

pub(crate) struct SocketInner {
    id: SocketId,
    pid: Option<Sid>,
    ns: Namespace,
    pub(crate) session: Arc<Session<ClientState>>,
    handshake: Handshake,
    recovered: bool,
    connected: AtomicBool,
    /// Whether `state.any_outgoing` is non-empty, read per delivery without the lock.
    has_outgoing: AtomicBool,
    state: Mutex<SocketState>,
    /// Its own lock: user values, read by handlers without the socket's state lock.
    extensions: Extensions,
}

impl Drop for SocketInner {
    fn drop(&mut self) {
        // Keeps the namespace's count exact whatever path let the socket go.
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        self.ns.acks_removed(st.acks.len());
    }
}

/// A client connected to a namespace. Cheap to clone; all clones are the same socket.
#[derive(Clone)]
pub struct Socket(pub(crate) Arc<SocketInner>);

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("id", &self.0.id)
            .field("nsp", &self.0.ns.name())
            .finish()
    }
}

/// Encodes a packet once in the server's format: its Engine.IO text frame,
/// then its attachments (or, with msgpack, one binary frame).
pub(crate) fn encode(packet: &Packet, parser: Parser) -> EncodedPacket {
    EncodedPacket(encode_frames(packet, parser).collect())
}

/// The Engine.IO frames of `packet`: its text, then its attachments; with
/// msgpack, its one binary message.
fn encode_frames(packet: &Packet, parser: Parser) -> impl Iterator<Item = Frame> + '_ {
    let (first, attachments) = match parser {
        Parser::Default => {
            // Exact, so the frame's `Bytes` takes the `String` without a second allocation.
            let mut text = String::with_capacity(1 + packet.encoded_len());
            text.push('4');
            packet.encode_into(&mut text);
            (Some(Frame::text(text)), packet.attachments())
        }
        Parser::Msgpack => match msgpack::encode_packet(packet) {
            Ok(bytes) => (Some(Frame::Binary(bytes.into())), &[][..]),
            Err(err) => {
                // Args hold valid JSON by construction: this is a bug, not a peer's doing.
                error!(target: "socket.io:socket", "msgpack encoding failed: {err}");
                (None, &[][..])
            }
        },
    };
    first
        .into_iter()
        .chain(attachments.iter().cloned().map(Frame::Binary))
}

impl Socket {
    pub(crate) fn new(
        id: SocketId,
        pid: Option<Sid>,
        ns: Namespace,
        session: Arc<Session<ClientState>>,
        handshake: Handshake,
        recovered: bool,
        data: serde_json::Value,
    ) -> Socket {
        Socket(Arc::new(SocketInner {
            id,
            pid,
            ns,
            session,
            handshake,
            recovered,
            connected: AtomicBool::new(false),
            has_outgoing: AtomicBool::new(false),
            state: Mutex::new(SocketState {
                data,
                ..SocketState::default()
            }),
            extensions: Extensions::default(),
        }))
    }

    pub(super) fn state(&self) -> MutexGuard<'_, SocketState> {
        self.0.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The socket id (per namespace; not the Engine.IO session id).
    pub fn id(&self) -> SocketId {
        self.0.id
    }

    /// The private id used by connection state recovery, when it is on.
    pub fn pid(&self) -> Option<Sid> {
        self.0.pid
    }

    /// The namespace's name.
    pub fn ns(&self) -> &str {
        self.0.ns.name()
    }

    /// The namespace it belongs to.
    pub fn namespace(&self) -> &Namespace {
        &self.0.ns
    }

    /// The handshake: headers, query, `auth`, address.
    pub fn handshake(&self) -> &Handshake {
        &self.0.handshake
    }

    /// Whether this socket's state was restored by connection state recovery.
    pub fn recovered(&self) -> bool {
        self.0.recovered
    }

    /// Whether it is still in its namespace.
    pub fn connected(&self) -> bool {
        self.0.connected.load(Ordering::Acquire)
    }

    /// The Engine.IO transport in use (`polling` or `websocket`).
    pub fn transport(&self) -> &'static str {
        self.0.session.transport().as_str()
    }

    /// The Engine.IO session id of the underlying connection.
    pub fn engine_sid(&self) -> Sid {
        self.0.session.sid()
    }

    /// Registers the handler of `event`, replacing the one it had. Its
    /// parameters are [extractors](super::extract), in any order.
    ///
    /// ```no_run
    /// # use rsio::prelude::*;
    /// # let io = Server::builder().build();
    /// io.ns("/", |socket: Socket| async move {
    ///     socket.on("echo", |socket: Socket, args: Args| async move {
    ///         let _ = socket.emit("echo", args);
    ///     });
    ///     socket.on("add", |Data((a, b)): Data<(i64, i64)>, ack: AckSender| async move {
    ///         let _ = ack.send(&(a + b));
    ///     });
    /// });
    /// ```
    pub fn on<M>(&self, event: impl Into<Cow<'static, str>>, handler: impl Handler<M>) {
        let event = event.into();
        let handler = boxed_event(handler);
        let replaced = {
            let mut st = self.state();
            match st.handlers.iter_mut().find(|(name, _)| *name == event) {
                Some((_, existing)) => Some(std::mem::replace(existing, handler)),
                None => {
                    st.handlers.push((event, handler));
                    None
                }
            }
        };
        // Dropped unlocked: what a handler captured may run user code on drop.
        drop(replaced);
    }

    /// Removes the handler of `event`.
    pub fn off(&self, event: &str) {
        let removed = {
            let mut st = self.state();
            let at = st.handlers.iter().position(|(name, _)| **name == *event);
            at.map(|i| st.handlers.remove(i))
        };
        drop(removed);
    }

    /// A catch-all listener of incoming events, run before the event's handler.
    pub fn on_any(&self, f: impl Fn(&Socket, &str, &Args) + Send + Sync + 'static) {
        self.state().listeners_mut().any_incoming.push(Arc::new(f));
    }

    /// A catch-all listener of outgoing events (broadcasts included), run just
    /// before the packet is written, with no lock of rsio held.
    pub fn on_any_outgoing(&self, f: impl Fn(&Socket, &str, &Args) + Send + Sync + 'static) {
        self.state().listeners_mut().any_outgoing.push(Arc::new(f));
        self.0.has_outgoing.store(true, Ordering::Release);
    }

    /// Per-packet middleware: `Err(message)` drops the event and reports
    /// `message` to the [`Socket::on_error`] handlers.
    pub fn use_middleware(
        &self,
        f: impl Fn(&Socket, &str, &Args) -> Result<(), String> + Send + Sync + 'static,
    ) {
        self.state().listeners_mut().middlewares.push(Arc::new(f));
    }

    /// Runs with the message of each event a [`Socket::use_middleware`] refused.
    pub fn on_error(&self, f: impl Fn(&Socket, &str) + Send + Sync + 'static) {
        self.state().listeners_mut().errors.push(Arc::new(f));
    }

    /// Runs before the socket leaves its rooms ([`Socket::rooms`] still lists them).
    pub fn on_disconnecting(&self, f: impl Fn(Socket, DisconnectReason) + Send + Sync + 'static) {
        self.state().listeners_mut().disconnecting.push(Arc::new(f));
    }

    /// Runs once the socket has left its namespace.
    pub fn on_disconnect(&self, f: impl Fn(Socket, DisconnectReason) + Send + Sync + 'static) {
        self.state().listeners_mut().disconnect.push(Arc::new(f));
    }

    /// Typed per-socket values (one per type), kept as long as the socket; read
    /// in handlers with the [`Extension`](super::Extension) extractor. Unlike
    /// [`Socket::set_data`], they are not shared with other servers nor kept by
    /// connection state recovery.
    pub fn extensions(&self) -> &Extensions {
        &self.0.extensions
    }

    /// `socket.data`, deserialized.
    pub fn data<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_value(self.state().data.clone()).ok()
    }

    /// `socket.data` as JSON.
    pub fn data_value(&self) -> serde_json::Value {
        self.state().data.clone()
    }

    /// Sets `socket.data` (JSON, shared with the other servers of a cluster and kept by recovery).
    pub fn set_data<T: Serialize>(&self, data: &T) {
        let value = serde_json::to_value(data).unwrap_or(serde_json::Value::Null);
        self.state().data = value;
        self.report_session();
    }

    /// Joins one or more rooms.
    pub fn join(&self, rooms: impl IntoRooms) {
        self.0.ns.adapter().add_all(self.0.id, &rooms.into_rooms());
        self.report_session();
    }

    /// Leaves `room`.
    pub fn leave(&self, room: &str) {
        self.0.ns.adapter().del(self.0.id, room);
        self.report_session();
    }

    /// The recoverable state of this socket.
    fn session(&self, pid: Sid) -> PersistedSession {
        let own = self.0.id.to_string();
        PersistedSession {
            id: self.0.id,
            pid,
            rooms: self.rooms().into_iter().filter(|r| *r != own).collect(),
            data: self.data_value(),
        }
    }

    /// Keeps the cluster's copy of this socket's session current, so that it
    /// survives this worker.
    pub(crate) fn report_session(&self) {
        let adapter = self.0.ns.adapter();
        if let (Some(pid), true) = (self.0.pid, adapter.sequenced()) {
            if self.connected() {
                adapter.session_update(&self.session(pid));
            }
        }
    }

    /// The rooms this socket is in, its own id room included.
    pub fn rooms(&self) -> Vec<String> {
        self.0.ns.adapter().socket_rooms(self.0.id)
    }

    /// Sends an event to this client.
    pub fn emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        self.emit_compressed(event, args, true)
    }

    /// With `false`, the next emit is never compressed: no permessage-deflate
    /// for its frames, and no `httpCompression` for a polling response that
    /// holds only such packets (Node's `socket.compress(false)`).
    pub fn compress(&self, compress: bool) -> SocketCompress<'_> {
        SocketCompress {
            socket: self,
            compress,
        }
    }

    fn emit_compressed(
        &self,
        event: &str,
        args: impl IntoArgs,
        compress: bool,
    ) -> Result<(), EmitError> {
        check_event(event)?;
        let mut args = args.into_args()?;
        let adapter = self.0.ns.adapter();
        if adapter.sequenced() && self.0.pid.is_some() {
            // The cluster numbers it and sends it back to this worker for delivery.
            self.notify_outgoing(event, &args);
            let packet = Packet::event(self.ns(), event, args, None);
            let opts = BroadcastOptions {
                rooms: vec![self.0.id.to_string()],
                ..Default::default()
            };
            adapter.broadcast_sequenced(&encode(&packet, self.0.ns.parser()), &opts);
            return Ok(());
        }
        // With recovery on, events get an offset so a reconnecting client can
        // ask for what it missed; the packet is logged like a broadcast to its id.
        let offset = adapter.next_offset();
        if let Some(offset) = &offset {
            args.push(offset)?;
        }
        self.notify_outgoing(event, &args);
        let packet = Packet::event(self.ns(), event, args, None);
        let encoded = encode(&packet, self.0.ns.parser());
        let sent = self
            .0
            .session
            .send_queued(encoded.0.iter().map(|frame| Queued {
                frame: frame.clone(),
                compress: Compress::from_flag(compress),
            }));
        // Logged once the write is known: one its connection did not take
        // (this socket gone) is replayed to a socket restored with its id.
        if let Some(offset) = &offset {
            adapter.store_to_socket(offset, self.0.id, &encoded, sent);
        }
        if sent {
            Ok(())
        } else {
            Err(EmitError::Disconnected)
        }
    }

    /// Broadcast to these rooms, without this socket.
    pub fn to(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast().to(rooms)
    }

    /// Same as [`Socket::to`].
    pub fn within(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.to(rooms)
    }

    /// A broadcast to every socket of the namespace but this one and those in these rooms.
    pub fn except(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.broadcast().except(rooms)
    }

    /// Every socket of the namespace but this one.
    pub fn broadcast(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.0.ns.clone()).except(self.0.id.to_string())
    }

    /// Broadcast on this server only.
    pub fn local(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.0.ns.clone()).local()
    }

    /// Leaves the namespace. With `close`, the whole connection is closed too.
    pub fn disconnect(&self, close: bool) {
        if !self.connected() {
            return;
        }
        self.disconnect_with(DisconnectReason::ServerNamespaceDisconnect);
        if close {
            super::client::close_connection(&self.0.session);
        }
    }

    /// Leaves the namespace for `reason`, telling the client with a DISCONNECT.
    pub(crate) fn disconnect_with(&self, reason: DisconnectReason) {
        if self.connected() {
            self.send_packet(&Packet::disconnect(self.ns()));
            self.on_close(reason);
        }
    }

    /// Sends a packet to this socket alone: its frames go straight to the queue,
    /// with no shared [`EncodedPacket`] (that is for broadcasts).
    pub(crate) fn send_packet(&self, packet: &Packet) -> bool {
        self.0
            .session
            .send_all(encode_frames(packet, self.0.ns.parser()))
    }

    pub(crate) fn send_encoded(&self, packet: &EncodedPacket) -> bool {
        self.0.session.send_all(packet.0.iter().cloned())
    }

    /// Sends one broadcast's packet, its frames flagged by `flags` (shared by
    /// every recipient, so each frame is compressed at most once).
    pub(crate) fn send_shared(
        &self,
        packet: &EncodedPacket,
        flags: &BroadcastCompress,
        volatile: bool,
    ) -> bool {
        let frames = packet.0.iter().enumerate().map(|(i, frame)| Queued {
            frame: frame.clone(),
            compress: flags.get(i),
        });
        if volatile {
            self.0.session.send_volatile(frames)
        } else {
            self.0.session.send_queued(frames)
        }
    }

    pub(crate) fn notify_outgoing(&self, event: &str, args: &Args) {
        if !self.has_outgoing_listeners() {
            return;
        }
        let listeners = self.state().listeners(|l| &l.any_outgoing);
        for f in listeners {
            guard::call(Guest::Socket(self, event), || f(self, event, args));
        }
    }

    pub(crate) fn has_outgoing_listeners(&self) -> bool {
        self.0.has_outgoing.load(Ordering::Acquire)
    }

    pub(crate) fn set_connected(&self) {
        self.0.connected.store(true, Ordering::Release);
    }

    /// An EVENT from the client: a panic in the code it runs costs this socket.
    pub(crate) fn on_event(&self, event: String, args: Args, ack: Option<u64>) {
        guard::run(Guest::Socket(self, &event), || {
            self.event_future(&event, args, ack)
        });
    }

    /// Runs the per-packet middlewares and catch-all listeners, then makes the
    /// future of the event's handler.
    fn event_future(&self, event: &str, args: Args, ack: Option<u64>) -> BoxFuture<'static, ()> {
        let (middlewares, any, handler) = {
            let st = self.state();
            (
                st.listeners(|l| &l.middlewares),
                st.listeners(|l| &l.any_incoming),
                st.handlers
                    .iter()
                    .find(|(name, _)| **name == *event)
                    .map(|(_, handler)| handler.clone()),
            )
        };
        for mw in middlewares {
            if let Err(message) = mw(self, event, &args) {
                let errors = self.state().listeners(|l| &l.errors);
                for f in errors {
                    f(self, &message);
                }
                return Box::pin(std::future::ready(()));
            }
        }
        for f in any {
            f(self, event, &args);
        }
        match handler {
            Some(handler) => handler(self.clone(), args, AckSender::client(self.clone(), ack)),
            None => {
                debug!(target: "socket.io:socket", id = %self.0.id, event, "no handler");
                Box::pin(std::future::ready(()))
            }
        }
    }

    /// Leaves the namespace for `reason`: handlers, rooms, recovery, acks.
    pub(crate) fn on_close(&self, reason: DisconnectReason) {
        if !self.0.connected.swap(false, Ordering::AcqRel) {
            return;
        }
        crate::metrics::socket_disconnected(reason);
        let disconnecting = self.state().listeners(|l| &l.disconnecting);
        for f in disconnecting {
            guard::call(Guest::Socket(self, "disconnecting"), || {
                f(self.clone(), reason)
            });
        }
        let ns = &self.0.ns;
        if let Some(pid) = self.0.pid {
            if reason.is_recoverable() {
                ns.adapter().persist_session(self.session(pid));
            } else {
                ns.adapter().forget_session(pid);
            }
        }
        ns.adapter().del_all(self.0.id);
        ns.remove_socket(self.0.id);
        self.0.session.data.remove_socket(ns.name());
        self.close_acks();
        let disconnect = self.state().listeners(|l| &l.disconnect);
        debug!(target: "socket.io:socket", id = %self.0.id, nsp = ns.name(), %reason, "disconnected");
        for f in disconnect {
            guard::call(Guest::Socket(self, "disconnect"), || {
                f(self.clone(), reason)
            });
        }
        // Handlers may hold clones of this socket; drop what they captured,
        // unlocked, as dropping a capture may run user code.
        let (handlers, listeners) = {
            let mut st = self.state();
            (std::mem::take(&mut st.handlers), st.listeners.take())
        };
        self.0.has_outgoing.store(false, Ordering::Release);
        drop((handlers, listeners));
        self.0.extensions.clear();
    }
}

pub(crate) fn check_event(event: &str) -> Result<(), EmitError> {
    if is_reserved_event(event) {
        Err(EmitError::ReservedEvent(event.to_string()))
    } else {
        Ok(())
    }
}

/// [`Socket::compress`]: the next emit with a `compress` flag.
#[derive(Debug, Clone, Copy)]
pub struct SocketCompress<'a> {
    socket: &'a Socket,
    compress: bool,
}

impl SocketCompress<'_> {
    /// Sends an event to this client.
    pub fn emit(self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        self.socket.emit_compressed(event, args, self.compress)
    }

    /// Every socket of the namespace but this one.
    pub fn broadcast(self) -> BroadcastOperator {
        self.socket.broadcast().compress(self.compress)
    }

    /// Broadcast to these rooms, without this socket.
    pub fn to(self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.socket.to(rooms).compress(self.compress)
    }
}
