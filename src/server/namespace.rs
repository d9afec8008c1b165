//! Namespaces: their sockets, middlewares and handlers, and their adapter.

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, MutexGuard, RwLock,
    },
    time::Duration,
};

use super::{
    ack::{AckSender, EmitError, IntoArgs},
    broadcast::BroadcastOperator,
    extract::{boxed_connection, Handler},
    handler::{ConnectError, ConnectionHandler, Middleware, ServerSideHandler},
    rooms::IntoRooms,
    socket::Socket,
    state::TypeMap,
};
use crate::{
    adapter::{Adapter, AdapterError, BroadcastFlags, BroadcastOptions, EncodedPacket, SocketId},
    engine::BroadcastCompress,
    parser::{Args, Parser},
};

#[derive(Default, Clone)]
pub(crate) struct NsHandlers {
    pub connection: Vec<ConnectionHandler>,
    pub middlewares: Vec<Middleware>,
    pub server_side: HashMap<String, ServerSideHandler>,
}

pub(crate) struct NsInner {
    name: String,
    adapter: Arc<dyn Adapter>,
    /// Socket ids are random and made by the server: the fast foldhash will do.
    sockets: Mutex<HashMap<SocketId, Socket, foldhash::fast::RandomState>>,
    handlers: RwLock<NsHandlers>,
    next_ack_id: AtomicU64,
    /// False while the new-namespace listeners of a fresh namespace run: it is
    /// already in the server's map (so they can look it up), but clients wait,
    /// since those listeners may still add middlewares.
    ready: AtomicBool,
    ready_notify: tokio::sync::Notify,
    /// Ack waiters of this namespace's sockets, kept by the sockets' ack maps.
    pending_acks: AtomicUsize,
    /// The server's packet format, for the packets encoded for this namespace.
    parser: Parser,
    /// The server's application state, for the `State` extractor.
    state: Arc<TypeMap>,
}

/// A namespace (`io.of("/name")`). Cheap to clone.
#[derive(Clone)]
pub struct Namespace(pub(crate) Arc<NsInner>);

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Namespace").field(&self.0.name).finish()
    }
}

impl Namespace {
    /// A namespace; one that is not `ready` holds its clients back until
    /// [`Namespace::set_ready`].
    pub(crate) fn new(
        name: String,
        adapter: Arc<dyn Adapter>,
        handlers: NsHandlers,
        ready: bool,
        parser: Parser,
        state: Arc<TypeMap>,
    ) -> Namespace {
        let first_ack_id = adapter.ack_id_base();
        Namespace(Arc::new(NsInner {
            name,
            adapter,
            sockets: Mutex::default(),
            handlers: RwLock::new(handlers),
            next_ack_id: AtomicU64::new(first_ack_id),
            ready: AtomicBool::new(ready),
            ready_notify: tokio::sync::Notify::new(),
            pending_acks: AtomicUsize::new(0),
            parser,
            state,
        }))
    }

    /// The server's packet format.
    pub(crate) fn parser(&self) -> Parser {
        self.0.parser
    }

    /// The server's application state.
    pub(crate) fn state(&self) -> &TypeMap {
        &self.0.state
    }

    /// Whether clients may join (its new-namespace listeners are done).
    pub(crate) fn is_ready(&self) -> bool {
        self.0.ready.load(Ordering::Acquire)
    }

    /// Lets the clients that wait in [`Namespace::wait_ready`] go on.
    pub(crate) fn set_ready(&self) {
        self.0.ready.store(true, Ordering::Release);
        self.0.ready_notify.notify_waiters();
    }

    /// Returns once the namespace is ready.
    pub(crate) async fn wait_ready(&self) {
        loop {
            let notified = self.0.ready_notify.notified();
            let mut notified = std::pin::pin!(notified);
            // Registered before the check, so a `set_ready` in between is not missed.
            notified.as_mut().enable();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    /// Its name (`/`, `/admin`).
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The adapter that keeps its rooms and reaches other servers.
    pub fn adapter(&self) -> &Arc<dyn Adapter> {
        &self.0.adapter
    }

    /// How many sockets are connected to this namespace on this server.
    pub fn socket_count(&self) -> usize {
        self.sockets_map().len()
    }

    fn sockets_map(
        &self,
    ) -> MutexGuard<'_, HashMap<SocketId, Socket, foldhash::fast::RandomState>> {
        self.0.sockets.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn handlers(&self) -> NsHandlers {
        self.0
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn handlers_mut(&self) -> std::sync::RwLockWriteGuard<'_, NsHandlers> {
        self.0.handlers.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn next_ack_id(&self) -> u64 {
        self.0.next_ack_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Acknowledgements this server waits for from the clients of this
    /// namespace (`emit_with_ack` of sockets and broadcasts). One atomic read:
    /// cheap enough for metrics.
    pub fn pending_acks(&self) -> usize {
        self.0.pending_acks.load(Ordering::Relaxed)
    }

    pub(crate) fn acks_added(&self, n: usize) {
        self.0.pending_acks.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn acks_removed(&self, n: usize) {
        if n > 0 {
            self.0.pending_acks.fetch_sub(n, Ordering::Relaxed);
        }
    }

    /// Runs `handler` for every new socket, after the middlewares accepted it
    /// and the CONNECT reply was sent. Its parameters are
    /// [extractors](super::extract): [`Socket`], [`State<T>`](super::State),
    /// [`Data<T>`](super::Data) (the client's `auth`)…
    pub fn on_connection<M>(&self, handler: impl Handler<M>) {
        let handler: ConnectionHandler = boxed_connection(handler);
        self.handlers_mut().connection.push(handler);
    }

    /// A middleware run, in order, before a socket joins: `Err` refuses it with
    /// a `CONNECT_ERROR` carrying the error's message and data.
    ///
    /// ```no_run
    /// # use rsio::server::{Server, Socket, ConnectError};
    /// # let io = Server::new(Default::default());
    /// io.of("/admin").use_middleware(|socket: Socket| async move {
    ///     if socket.handshake().auth()["token"] == "secret" {
    ///         Ok(())
    ///     } else {
    ///         Err(ConnectError::new("unauthorized").with_data(serde_json::json!({"code": 401})))
    ///     }
    /// });
    /// ```
    pub fn use_middleware<F, Fut>(&self, middleware: F)
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.handlers_mut()
            .middlewares
            .push(Arc::new(move |s| Box::pin(middleware(s))));
    }

    /// Handles `server_side_emit` events from the other servers of a cluster.
    pub fn on_server_side<F, Fut>(&self, event: impl Into<String>, handler: F)
    where
        F: Fn(Args, AckSender) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let replaced = self.handlers_mut().server_side.insert(
            event.into(),
            Arc::new(move |a, ack| Box::pin(handler(a, ack))),
        );
        // Dropped unlocked: what a handler captured may run user code on drop.
        drop(replaced);
    }

    /// Room changes on this server: created, deleted, joined, left (Node's
    /// `io.of(nsp).adapter.on("create-room" | "delete-room" | "join-room" | "leave-room")`),
    /// run with no lock of rsio held.
    pub fn on_room_event(&self, f: impl Fn(&crate::adapter::RoomEvent) + Send + Sync + 'static) {
        self.0.adapter.on_room_event(Arc::new(f));
    }

    /// The local socket with this id.
    pub fn get_socket(&self, id: SocketId) -> Option<Socket> {
        self.sockets_map().get(&id).cloned()
    }

    /// The sockets connected to this namespace on this server.
    pub fn sockets(&self) -> Vec<Socket> {
        self.sockets_map().values().cloned().collect()
    }

    pub(crate) fn add_socket(&self, socket: Socket) {
        self.sockets_map().insert(socket.id(), socket);
    }

    pub(crate) fn remove_socket(&self, id: SocketId) {
        self.sockets_map().remove(&id);
    }

    /// Writes an encoded packet to every local socket `opts` selects; `event`
    /// (name and arguments) is shown to outgoing listeners when known. A frame
    /// that is compressed (the broadcast's `compress` flag allowing) is
    /// compressed once, for every recipient.
    pub(crate) fn deliver(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        event: Option<(&str, &Args)>,
    ) -> usize {
        self.deliver_skipping(packet, opts, event, &[])
    }

    /// As [`Namespace::deliver`], but not to the sockets `skip` (restored
    /// with this packet already).
    pub(crate) fn deliver_skipping(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        event: Option<(&str, &Args)>,
        skip: &[SocketId],
    ) -> usize {
        let flags = BroadcastCompress::new(&packet.0, opts.flags.compress);
        let send =
            |socket: &Socket| usize::from(socket.send_shared(packet, &flags, opts.flags.volatile));
        let mut count = 0;
        // Sockets with outgoing listeners are served once the room index and the
        // socket map are unlocked, as those listeners are user code that may call
        // back into rsio. Without such sockets nothing is allocated.
        let mut deferred = Vec::new();
        {
            let sockets = self.sockets_map();
            self.0.adapter.for_each_local(opts, &mut |id| {
                let Some(socket) = sockets.get(&id).filter(|_| !skip.contains(&id)) else {
                    return;
                };
                if event.is_some() && socket.has_outgoing_listeners() {
                    deferred.push(socket.clone());
                } else {
                    count += send(socket);
                }
            });
        }
        if let Some((name, args)) = event {
            for socket in &deferred {
                // Listeners first, then the write, as Node does.
                socket.notify_outgoing(name, args);
                count += send(socket);
            }
        }
        crate::metrics::add(crate::metrics::counter::BROADCAST_DELIVERIES, count as u64);
        count
    }

    /// Writes a packet that asks for acknowledgement `ack_id` to `targets`; their
    /// answers go to `tx`. Returns how many got it. `flags` says whether it is
    /// volatile and whether it may be compressed.
    pub(crate) fn deliver_with_ack(
        &self,
        packet: &EncodedPacket,
        targets: &[Socket],
        broadcast: BroadcastFlags,
        ack_id: u64,
        tx: tokio::sync::mpsc::UnboundedSender<Args>,
    ) -> usize {
        let volatile = broadcast.volatile;
        let flags = BroadcastCompress::new(&packet.0, broadcast.compress);
        let mut count = 0;
        for socket in targets {
            if !socket.expect_ack(ack_id, super::ack::AckWaiter::Many(tx.clone())) {
                continue; // it has left: nothing would answer
            }
            let sent = socket.send_shared(packet, &flags, volatile);
            if sent {
                count += 1;
            } else {
                socket.forget_ack(ack_id);
            }
        }
        crate::metrics::add(crate::metrics::counter::BROADCAST_DELIVERIES, count as u64);
        count
    }

    pub(crate) fn local_sockets_join(&self, opts: &BroadcastOptions, rooms: &[String]) {
        for socket in self.select(opts) {
            socket.join(rooms.to_vec());
        }
    }

    pub(crate) fn local_sockets_leave(&self, opts: &BroadcastOptions, rooms: &[String]) {
        for socket in self.select(opts) {
            for room in rooms {
                socket.leave(room);
            }
        }
    }

    pub(crate) fn local_disconnect_sockets(&self, opts: &BroadcastOptions, close: bool) {
        for socket in self.select(opts) {
            socket.disconnect(close);
        }
    }

    /// Local sockets `opts` selects.
    pub(crate) fn select(&self, opts: &BroadcastOptions) -> Vec<Socket> {
        let sockets = self.sockets_map();
        let mut out = Vec::new();
        self.0.adapter.for_each_local(opts, &mut |id| {
            if let Some(s) = sockets.get(&id) {
                out.push(s.clone());
            }
        });
        out
    }

    /// Runs a `server_side_emit` received from another server (called by adapters).
    pub fn on_server_side_emit(&self, event: &str, args: Args, ack: AckSender) {
        let handler = self.handlers().server_side.get(event).cloned();
        if let Some(h) = handler {
            super::guard::run(super::guard::Guest::Detached(event), || h(args, ack));
        }
    }

    // Broadcasting: the same operators as `BroadcastOperator`, from the whole namespace.

    /// A broadcast to these rooms.
    pub fn to(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).to(rooms)
    }

    /// Same as [`Namespace::to`].
    pub fn within(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.to(rooms)
    }

    /// A broadcast to every socket but those in these rooms.
    pub fn except(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).except(rooms)
    }

    /// A broadcast on this server only.
    pub fn local(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).local()
    }

    /// A broadcast that clients not ready to receive it miss.
    pub fn volatile(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).volatile()
    }

    /// With `false`, the next emit is never compressed (Node's `compress`).
    pub fn compress(&self, compress: bool) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).compress(compress)
    }

    /// A broadcast whose acknowledgements are awaited for at most `timeout`.
    pub fn timeout(&self, timeout: Duration) -> BroadcastOperator {
        BroadcastOperator::new(self.clone()).timeout(timeout)
    }

    /// Sends an event to every socket of the namespace.
    pub fn emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        BroadcastOperator::new(self.clone()).emit(event, args)
    }

    /// Its sockets, on every server.
    pub async fn fetch_sockets(
        &self,
    ) -> Result<Vec<super::broadcast::FetchedSocket>, AdapterError> {
        BroadcastOperator::new(self.clone()).fetch_sockets().await
    }

    /// Makes every socket join these rooms.
    pub fn sockets_join(&self, rooms: impl IntoRooms) {
        BroadcastOperator::new(self.clone()).sockets_join(rooms)
    }

    /// Makes every socket leave these rooms.
    pub fn sockets_leave(&self, rooms: impl IntoRooms) {
        BroadcastOperator::new(self.clone()).sockets_leave(rooms)
    }

    /// Disconnects every socket (with `close`, their connections too).
    pub fn disconnect_sockets(&self, close: bool) {
        BroadcastOperator::new(self.clone()).disconnect_sockets(close)
    }

    /// Sends an event to the `on_server_side` handlers of the other servers and
    /// collects one answer from each (an empty list for a single server).
    pub async fn server_side_emit_with_ack(
        &self,
        event: &str,
        args: impl IntoArgs,
        timeout: Duration,
    ) -> Result<Vec<Args>, ServerSideEmitError> {
        super::socket::check_event(event)?;
        let args = args.into_args().map_err(EmitError::from)?;
        Ok(self
            .0
            .adapter
            .server_side_emit_remote(event, &args, timeout)
            .await?)
    }

    /// Sends an event to the other servers' `on_server_side` handlers.
    pub fn server_side_emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        super::socket::check_event(event)?;
        let args = args.into_args()?;
        let fut = self
            .0
            .adapter
            .server_side_emit_remote(event, &args, Duration::ZERO);
        drop(fut);
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
/// Why a server-side emit failed.
pub enum ServerSideEmitError {
    #[error(transparent)]
    /// The event could not be sent.
    Emit(#[from] EmitError),
    /// Some servers did not answer in time; the answers that came are kept.
    #[error(transparent)]
    Timeout(#[from] crate::adapter::PartialResponses<Args>),
}
