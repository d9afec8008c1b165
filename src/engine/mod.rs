//! Engine.IO v4 (and v3 with `allow_eio3`): sessions over HTTP long-polling and WebSocket, upgrades and heartbeats.
//!
//! The engine knows nothing of namespaces or rooms: it hands messages to an
//! [`EngineHandler`] and sends the [`Frame`]s it is given.

pub mod config;
#[doc(hidden)]
pub mod deflate;
pub mod error;
mod headers;
mod heartbeat;
pub(crate) mod jsonp;
pub mod packet;
pub mod payload;
pub mod payload_v3;
mod polling;
mod proxy;
mod router;
mod scratch_reader;
pub mod server;
pub mod session;
pub mod sid;
mod websocket;

pub use config::{
    AllowRequest, AllowedOrigins, CookieOptions, CorsOptions, CorsOrigin, DeflateConfig,
    EngineConfig, EngineConfigError, Transports,
};
pub use error::RequestError;
pub use headers::RequestHeaders;
pub use packet::{Frame, Packet};
pub use server::{Engine, EngineHandler, Message};
pub use session::{
    BroadcastCompress, CloseReason, Compress, HandshakeRequest, Protocol, Queued, Session,
    TransportKind,
};
pub use sid::Sid;
