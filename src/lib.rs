//! rsio: a Socket.IO server (Engine.IO v4, Socket.IO v5) for multicore Linux.
//!
//! ```no_run
//! use rsio::prelude::*;
//!
//! # async fn run() -> std::io::Result<()> {
//! let io = Server::builder().build();
//! io.ns("/", |socket: Socket| async move {
//!     socket.on("chat message", |socket: Socket, Data(text): Data<String>| async move {
//!         let _ = socket.broadcast().emit("chat message", &text);
//!     });
//! });
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! let app = axum::Router::new().merge(io.router());
//! let _ = rsio::http::serve(listener, app, Default::default(), std::future::pending()).await;
//! # Ok(()) }
//! ```
//!
//! What handlers take is in [`extract`], how values become event arguments in
//! [`IntoArgs`], the options in [`ServerBuilder`].
//!
//! Layers, bottom up: [`http`] (accept loop), [`engine`] (Engine.IO sessions and
//! transports), [`parser`] (Socket.IO packets), [`adapter`] (rooms, and the seam to
//! other servers), [`server`] (the API handlers are written against), [`cluster`]
//! (one worker per core).
// MISSING_DOCS_PLACEHOLDER

pub mod adapter;
pub mod cluster;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod parser;
pub mod server;

pub use adapter::RecoveryConfig;
pub use parser::{Args, Binary, Parser};
pub use server::{
    extract, AckSender, BroadcastOperator, ConnectError, Data, DisconnectReason, EmitError,
    Extension, Extensions, Handshake, IntoArgs, Namespace, Server, ServerBuilder, ServerConfig,
    Socket, State, TryData,
};

/// What a server and its handlers need: `use rsio::prelude::*;`.
pub mod prelude {
    pub use crate::{
        adapter::RecoveryConfig,
        parser::{Args, Binary},
        server::{
            AckSender, ConnectError, Data, DisconnectReason, Extension, Namespace, Server, Socket,
            State, TryData,
        },
    };
}

/// Internals some integration tests reach for; not part of the API.
#[doc(hidden)]
pub mod __private {
    /// The sockets of every open connection, each read under its connection's
    /// lock (what a re-entrant listener would take).
    pub fn connection_sockets(io: &crate::Server) -> Vec<crate::Socket> {
        io.engine()
            .sessions()
            .iter()
            .flat_map(|session| session.data.sockets())
            .collect()
    }
}
