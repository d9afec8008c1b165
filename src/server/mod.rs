//! The Socket.IO server: namespaces, sockets, rooms, events and acknowledgements.
//!
//! ```no_run
//! use rsio::prelude::*;
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = Server::builder().build();
//! io.ns("/", |socket: Socket| async move {
//!     socket.on("chat message", |socket: Socket, args: Args| async move {
//!         // to everyone in the namespace, on every server
//!         let _ = socket.namespace().emit("chat message", args);
//!     });
//!     socket.on("ping", |ack: AckSender| async move {
//!         let _ = ack.send("pong");
//!     });
//! });
//! // Mount it in any axum app (or use `io.layer()` / `io.service()` elsewhere):
//! let app = axum::Router::new().merge(io.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! rsio::http::serve(listener, app, Default::default(), std::future::pending()).await.ok();
//! # Ok(()) }
//! ```

mod ack;
mod broadcast;
mod builder;
mod client;
pub mod extract;
mod guard;
mod handler;
mod handshake;
mod namespace;
mod reason;
mod rooms;
mod socket;
mod state;
mod tower;
mod v2_client;

use std::{
    collections::{hash_map::Entry, HashMap},
    future::Future,
    sync::{Arc, RwLock},
    time::Duration,
};

pub use ack::{
    AckError, AckSender, BroadcastAckError, EmitError, EmitWithAckError, IntoArgs, SocketTimeout,
};
pub use broadcast::{BroadcastEmitError, BroadcastOperator, FetchedSocket};
pub use builder::ServerBuilder;
pub(crate) use client::ClientHandler;
pub use extract::{Data, Extension, FromEvent, Handler, State, TryData};
pub use handler::ConnectError;
pub use handshake::Handshake;
pub use namespace::{Namespace, ServerSideEmitError};
pub use reason::DisconnectReason;
pub use rooms::IntoRooms;
pub use socket::{Socket, SocketCompress};
pub use state::Extensions;
pub use tower::{SocketIoLayer, SocketIoService};

use crate::{
    adapter::{Adapter, AdapterError, LocalAdapter, RecoveryConfig},
    engine::{Engine, EngineConfig},
    parser::Parser,
};

/// Socket.IO options (Engine.IO's are in `engine`), with Node's defaults.
///
/// [`Server::builder`] sets them one by one; a config is also made with
/// `ServerConfig::default()` and changed field by field. Whichever way, the
/// server is at `/socket.io/` unless [`EngineConfig::path`] says otherwise.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The Engine.IO options (ping, transports, CORS, …).
    pub engine: EngineConfig,
    /// A connection that joins no namespace within this time is closed.
    pub connect_timeout: Duration,
    /// Most binary attachments one packet may announce.
    pub max_attachments: usize,
    /// Node's `connectionStateRecovery`; off by default.
    pub connection_state_recovery: Option<RecoveryConfig>,
    /// Node's `parser`: the packet format every client of this server uses
    /// ([`Parser::Msgpack`] for clients with `socket.io-msgpack-parser`).
    pub parser: Parser,
    /// Application state for the [`State`] extractor ([`ServerBuilder::with_state`]).
    pub(crate) state: Arc<state::TypeMap>,
}

/// Where a Socket.IO server is mounted when [`EngineConfig::path`] is `None`.
pub const SOCKET_IO_PATH: &str = "/socket.io/";

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            engine: EngineConfig::default(),
            connect_timeout: Duration::from_millis(45_000),
            max_attachments: crate::parser::DEFAULT_MAX_ATTACHMENTS,
            connection_state_recovery: None,
            parser: Parser::Default,
            state: Arc::default(),
        }
    }
}

/// Makes the adapter of each namespace (given its name). It runs with no lock
/// held; when two threads create the same namespace at once it may be called
/// twice for that name, and only one of the adapters is kept.
pub type AdapterFactory = Arc<dyn Fn(&str) -> Arc<dyn Adapter> + Send + Sync>;

type NamespaceMatcher = Arc<dyn Fn(&str, &serde_json::Value) -> bool + Send + Sync>;
type NewNamespaceHandler = Arc<dyn Fn(&Namespace) + Send + Sync>;

pub(crate) struct ServerInner {
    pub(crate) config: ServerConfig,
    namespaces: RwLock<HashMap<String, Namespace>>,
    parents: RwLock<Vec<(NamespaceMatcher, Namespace)>>,
    new_namespace: RwLock<Vec<NewNamespaceHandler>>,
    adapter_factory: AdapterFactory,
}

impl ServerInner {
    fn existing(&self, name: &str) -> Option<Namespace> {
        self.namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// The namespace `name`, created with `handlers` if it does not exist.
    ///
    /// The adapter factory and the new-namespace listeners are user code that
    /// may call back into the server, so no lock is held while they run: the
    /// namespace is built, then inserted, then shown to the listeners, and it
    /// holds its clients back until they are done (they may add middlewares).
    fn get_or_create(
        &self,
        name: &str,
        handlers: impl FnOnce() -> namespace::NsHandlers,
    ) -> Namespace {
        if let Some(ns) = self.existing(name) {
            return ns;
        }
        let fresh = Namespace::new(
            name.to_string(),
            (self.adapter_factory)(name),
            handlers(),
            false,
            self.config.parser,
            self.config.state.clone(),
        );
        let existing = {
            let mut map = self.namespaces.write().unwrap_or_else(|e| e.into_inner());
            match map.entry(name.to_string()) {
                Entry::Occupied(e) => Some(e.get().clone()),
                Entry::Vacant(e) => {
                    e.insert(fresh.clone());
                    None
                }
            }
        };
        if let Some(existing) = existing {
            // Another thread created it first; ours (and its adapter) is dropped
            // here, outside the lock, as an adapter's drop is user code too.
            return existing;
        }
        // Ready even if a listener panics, so that no client waits for ever.
        struct SetReady(Namespace);
        impl Drop for SetReady {
            fn drop(&mut self) {
                self.0.set_ready();
            }
        }
        let _ready = SetReady(fresh.clone());
        let listeners = self
            .new_namespace
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for f in listeners {
            f(&fresh);
        }
        fresh
    }

    /// The namespace a CONNECT names: a static one, or a new child of the first
    /// dynamic parent that accepts the name.
    pub(crate) fn namespace_for(&self, name: &str, auth: &serde_json::Value) -> Option<Namespace> {
        if let Some(ns) = self.existing(name) {
            return Some(ns);
        }
        // The matchers are user code: they run on a copy of the list, unlocked.
        let parents = self
            .parents
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let parent = parents
            .into_iter()
            .find(|(matches, _)| matches(name, auth))
            .map(|(_, p)| p)?;
        // The child inherits the parent's middlewares and handlers as they are now.
        Some(self.get_or_create(name, || parent.handlers()))
    }
}

/// A weak handle on a server, for adapters that deliver what other servers send.
#[derive(Clone)]
pub(crate) struct ServerInnerRef(std::sync::Weak<ServerInner>);

impl ServerInnerRef {
    /// An existing namespace (messages for namespaces this server never created are dropped).
    pub(crate) fn namespace(&self, name: &str) -> Option<Namespace> {
        let inner = self.0.upgrade()?;
        let map = inner.namespaces.read().unwrap_or_else(|e| e.into_inner());
        map.get(name).cloned()
    }
}

/// A Socket.IO server. Cheap to clone; every clone is the same server.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
    engine: Arc<Engine<ClientHandler>>,
}

impl Server {
    /// Configures a server option by option (Node's names), then
    /// [`ServerBuilder::build`]s it.
    ///
    /// ```no_run
    /// # use rsio::prelude::*;
    /// # use std::time::Duration;
    /// let io = Server::builder()
    ///     .ping_interval(Duration::from_secs(10))
    ///     .connection_state_recovery(RecoveryConfig::default())
    ///     .build();
    /// ```
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// A server with the in-memory adapter.
    ///
    /// # Panics
    ///
    /// When [`EngineConfig::validate`](crate::engine::EngineConfig::validate)
    /// refuses `config.engine`; [`Server::try_new`] returns that error instead.
    pub fn new(config: ServerConfig) -> Server {
        let recovery = config.connection_state_recovery;
        Server::with_adapter(
            config,
            Arc::new(move |_name: &str| Arc::new(LocalAdapter::new(recovery)) as Arc<dyn Adapter>),
        )
    }

    /// A server with the in-memory adapter, or why `config` cannot work.
    pub fn try_new(config: ServerConfig) -> Result<Server, crate::engine::EngineConfigError> {
        config.engine.validate()?;
        Ok(Server::new(config))
    }

    /// A server whose namespaces use adapters from `factory` (e.g. the cluster adapter).
    ///
    /// # Panics
    ///
    /// As [`Server::new`], on a config that [`EngineConfig::validate`](crate::engine::EngineConfig::validate) refuses.
    pub fn with_adapter(mut config: ServerConfig, factory: AdapterFactory) -> Server {
        if config.engine.path.is_none() {
            config.engine.path = Some(SOCKET_IO_PATH.into());
        }
        let inner = Arc::new(ServerInner {
            config: config.clone(),
            namespaces: RwLock::default(),
            parents: RwLock::default(),
            new_namespace: RwLock::default(),
            adapter_factory: factory,
        });
        let engine = Engine::new(
            config.engine,
            ClientHandler {
                server: inner.clone(),
            },
        );
        let server = Server { inner, engine };
        server.of("/");
        server
    }

    /// The options it runs with (its path always set).
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// A weak handle, for adapters.
    pub(crate) fn inner_ref(&self) -> ServerInnerRef {
        ServerInnerRef(Arc::downgrade(&self.inner))
    }

    /// The namespace `name` if it exists (static, or a dynamic child already created).
    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        self.inner_ref().namespace(name)
    }

    /// The Engine.IO server underneath (session counts, error counters).
    pub(crate) fn engine(&self) -> &Arc<Engine<ClientHandler>> {
        &self.engine
    }

    /// Engine.IO connections open now (each holds a socket per namespace joined).
    pub fn client_count(&self) -> usize {
        self.engine.clients_count()
    }

    /// An axum router serving this server at its path; merge it into an app.
    pub fn router(&self) -> axum::Router {
        self.engine.router()
    }

    /// A tower [`Layer`](::tower::Layer) that answers this server's path and
    /// hands every other request to the service it wraps: mounts rsio under
    /// plain hyper, tower or axum (`Router::layer`).
    pub fn layer(&self) -> SocketIoLayer {
        SocketIoLayer::new(self.clone())
    }

    /// A tower [`Service`](::tower::Service) of this server alone (404 for
    /// other paths), e.g. for `hyper_util::service::TowerToHyperService`.
    pub fn service(&self) -> SocketIoService {
        SocketIoService::new(self.clone())
    }

    /// The namespace `name`, created on first use.
    pub fn of(&self, name: &str) -> Namespace {
        let name = if name.starts_with('/') {
            name.to_string()
        } else {
            format!("/{name}")
        };
        self.inner.get_or_create(&name, Default::default)
    }

    /// `io.of(name).on("connection", handler)`: the handler's parameters are
    /// [extractors](extract) ([`Socket`], [`State<T>`], [`Data<T>`] for `auth`…).
    pub fn ns<M>(&self, name: &str, handler: impl Handler<M>) -> Namespace {
        let ns = self.of(name);
        ns.on_connection(handler);
        ns
    }

    /// `io.use(middleware)`: a middleware of the main namespace `/` (see
    /// [`Namespace::use_middleware`]); `Err` refuses the connection.
    pub fn use_middleware<F, Fut>(&self, middleware: F)
    where
        F: Fn(Socket) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), ConnectError>> + Send + 'static,
    {
        self.sockets().use_middleware(middleware);
    }

    /// A parent of dynamic namespaces: a CONNECT to an unknown name that
    /// `matches(name, auth)` accepts creates a child namespace, which inherits
    /// the middlewares and connection handlers registered on the returned parent.
    /// `matches` runs with no lock of rsio held.
    ///
    /// ```no_run
    /// # use rsio::prelude::*;
    /// # let io = Server::builder().build();
    /// io.dynamic_namespace(|name, _auth| name.starts_with("/workspace-"))
    ///     .on_connection(|socket: Socket| async move {
    ///         let _ = socket.emit("hello", socket.ns());
    ///     });
    /// ```
    pub fn dynamic_namespace(
        &self,
        matches: impl Fn(&str, &serde_json::Value) -> bool + Send + Sync + 'static,
    ) -> Namespace {
        let parent = Namespace::new(
            format!(
                "<dynamic #{}>",
                self.inner.parents.read().map(|p| p.len()).unwrap_or(0)
            ),
            Arc::new(LocalAdapter::default()),
            Default::default(),
            true,
            self.inner.config.parser,
            self.inner.config.state.clone(),
        );
        self.inner
            .parents
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((Arc::new(matches), parent.clone()));
        parent
    }

    /// Runs for every namespace created from now on (static or dynamic child).
    ///
    /// It runs with no lock held, so it may use the server; clients that
    /// connect to the new namespace wait until every listener has returned.
    pub fn on_new_namespace(&self, f: impl Fn(&Namespace) + Send + Sync + 'static) {
        self.inner
            .new_namespace
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(Arc::new(f));
    }

    /// The main namespace `/`.
    pub fn sockets(&self) -> Namespace {
        self.of("/")
    }

    /// Sends an event to every socket of `/` (see [`Namespace::emit`]).
    pub fn emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        self.sockets().emit(event, args)
    }

    /// A broadcast of `/` to these rooms.
    pub fn to(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.sockets().to(rooms)
    }

    /// Same as [`Server::to`].
    pub fn within(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.sockets().within(rooms)
    }

    /// A broadcast of `/` to every socket but those in these rooms.
    pub fn except(&self, rooms: impl IntoRooms) -> BroadcastOperator {
        self.sockets().except(rooms)
    }

    /// A broadcast of `/` on this server only (not to other servers of a cluster).
    pub fn local(&self) -> BroadcastOperator {
        self.sockets().local()
    }

    /// A broadcast of `/` that clients not ready to receive it miss.
    pub fn volatile(&self) -> BroadcastOperator {
        self.sockets().volatile()
    }

    /// With `false`, the next emit is never compressed (Node's `compress`).
    pub fn compress(&self, compress: bool) -> BroadcastOperator {
        self.sockets().compress(compress)
    }

    /// A broadcast of `/` whose acknowledgements are awaited for at most `timeout`.
    pub fn timeout(&self, timeout: Duration) -> BroadcastOperator {
        self.sockets().timeout(timeout)
    }

    /// The sockets of `/`, on every server.
    pub async fn fetch_sockets(&self) -> Result<Vec<FetchedSocket>, AdapterError> {
        self.sockets().fetch_sockets().await
    }

    /// Makes every socket of `/` join these rooms.
    pub fn sockets_join(&self, rooms: impl IntoRooms) {
        self.sockets().sockets_join(rooms)
    }

    /// Makes every socket of `/` leave these rooms.
    pub fn sockets_leave(&self, rooms: impl IntoRooms) {
        self.sockets().sockets_leave(rooms)
    }

    /// Disconnects every socket of `/` (with `close`, their connections too).
    pub fn disconnect_sockets(&self, close: bool) {
        self.sockets().disconnect_sockets(close)
    }

    /// Acknowledgements this server waits for from its clients, over every
    /// namespace: one atomic read per namespace, for metrics.
    pub fn pending_acks(&self) -> usize {
        self.inner
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(Namespace::pending_acks)
            .sum()
    }

    /// How many sockets each namespace of this server has, for metrics (namespaces
    /// are cloned out first: no two locks are held at once).
    pub fn socket_counts(&self) -> Vec<(String, u64)> {
        let namespaces: Vec<Namespace> = self
            .inner
            .namespaces
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        namespaces
            .iter()
            .map(|ns| (ns.name().to_string(), ns.socket_count() as u64))
            .collect()
    }

    /// Disconnects every socket with "server shutting down" (recoverable) and
    /// closes every connection.
    pub fn close(&self) {
        for session in self.engine.sessions() {
            for socket in session.data.sockets() {
                socket.on_close(DisconnectReason::ServerShuttingDown);
            }
            session.close();
        }
    }
}
