//! The HTTP front: rsio's own accept loop (timeouts, size limits, a connection
//! cap, draining) serving an axum `Router`.

pub mod client_bundle;
mod serve;

pub use serve::{serve, serve_with_handoff, ServeConfig, ServeError};
