//! rsio: a Socket.IO server (Engine.IO v4, Socket.IO v5) for multicore Linux.
//!
//! A server in full: application state, per-socket state, typed payloads, acks
//! (the same program is `examples/library_tour.rs`):
//!
//! ```rust,no_run
//! use rsio::prelude::*;
//! use serde::Deserialize;
//!
//! #[derive(Clone)]
//! struct App { greeting: String }
//!
//! #[derive(Deserialize)]
//! struct Msg { text: String }
//!
//! #[derive(Clone, Default)]
//! struct Seen(u32);
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() -> std::io::Result<()> {
//!     let io = Server::builder()
//!         .ping_interval(std::time::Duration::from_secs(10))
//!         .connection_state_recovery(RecoveryConfig::default())
//!         .with_state(App { greeting: "hello".into() })
//!         .build();
//!     io.ns("/", |socket: Socket, State(app): State<App>| async move {
//!         socket.extensions().insert(Seen::default());
//!         let _ = socket.emit("greeting", &app.greeting);
//!         socket.on("msg", |socket: Socket, TryData(msg): TryData<Msg>, ack: AckSender| async move {
//!             let seen = socket.extensions().get::<Seen>().map(|s| s.0 + 1).unwrap_or(1);
//!             socket.extensions().insert(Seen(seen));
//!             match msg {
//!                 Ok(m) => { let _ = ack.send(&(m.text, seen)); }
//!                 Err(e) => { let _ = ack.send(&format!("bad message: {e}")); }
//!             }
//!         });
//!         socket.on("ping", |ack: AckSender| async move { let _ = ack.send(()); });
//!         socket.on("list", |socket: Socket| async move { let _ = socket.emit("list", &vec![1, 2, 3]); });
//!     });
//!     let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
//!     let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
//!     let app = axum::Router::new().merge(io.router());
//!     let _ = rsio::http::serve(listener, app, Default::default(), std::future::pending()).await;
//!     Ok(())
//! }
//! ```
//!
//! What handlers take is in [`extract`], how values become event arguments in
//! [`IntoArgs`], the options in [`ServerBuilder`].
//!
//! Layers, bottom up: [`http`] (accept loop), [`engine`] (Engine.IO sessions and
//! transports), [`parser`] (Socket.IO packets), [`adapter`] (rooms, and the seam to
//! other servers), [`server`] (the API handlers are written against), [`cluster`]
//! (one worker per core).
#![warn(missing_docs)]

pub mod adapter;
pub mod admin;
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

/// The README's Rust examples, compiled by `cargo test --doc` (see `build.rs`).
#[cfg(doctest)]
#[doc = include_str!(concat!(env!("OUT_DIR"), "/readme_rust.md"))]
pub struct ReadmeExamples;

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
