//! rsio: a Socket.IO server (Engine.IO v4, Socket.IO v5) for multicore Linux.
//!
//! Layers, bottom up: [`http`] (accept loop), [`engine`] (Engine.IO sessions and
//! transports), [`parser`] (Socket.IO packets), [`adapter`] (rooms, and the seam to
//! other servers), [`server`] (the API handlers are written against).
pub mod adapter;
pub mod admin;
pub mod cluster;
pub mod engine;
pub mod http;
pub mod metrics;
pub mod parser;
pub mod server;
