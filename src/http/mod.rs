//! The HTTP front: rsio's own accept loop (timeouts, size limits, a connection
//! cap, draining) serving an axum `Router`.

pub mod client_bundle;

/// The `http` crate's types (requests, headers, status codes), as rsio's API
/// uses them: `rsio::http::request::Parts`, `rsio::http::HeaderMap`, ….
#[doc(no_inline)]
pub use ::http::*;
mod serve;

pub use serve::{serve, serve_with_handoff, ServeConfig, ServeError};
