//! Handlers as stored by namespaces and sockets, and how they are run.
//!
//! A handler runs at once, on the task that read the packet, up to its first
//! `.await` that is not ready; only then does the rest become a task of its own.
//! So packets reach handlers in the order they arrived (and handlers that never
//! wait cost no task), while a slow handler blocks neither this socket's later
//! events nor other sockets.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Waker},
};

use futures_util::future::BoxFuture;

use super::{ack::AckSender, reason::DisconnectReason, socket::Socket};
use crate::parser::Args;

/// Runs `fut` until it first waits, then hands the rest to the runtime.
pub(crate) fn run_inline(mut fut: BoxFuture<'static, ()>) {
    let mut cx = Context::from_waker(Waker::noop());
    if Pin::new(&mut fut).poll(&mut cx).is_pending() {
        // Polled again there with a real waker, which re-registers its interests.
        tokio::spawn(fut);
    }
}

/// Why a namespace middleware refused a connection: sent to the client as
/// `CONNECT_ERROR {"message": …, "data": …}`, which the client sees as the
/// `Error` of its `connect_error` event (`err.message`, `err.data`).
///
/// Made from a message (`ConnectError::new("unauthorized")`, or `"…".into()`),
/// or from any error with [`ConnectError::from_error`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct ConnectError {
    /// The client's `err.message`.
    pub message: String,
    /// The client's `err.data`, if any.
    pub data: Option<serde_json::Value>,
}

impl ConnectError {
    /// A refusal with this message and no data.
    pub fn new(message: impl Into<String>) -> ConnectError {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    /// A refusal whose message is `err`'s text.
    pub fn from_error(err: impl std::fmt::Display) -> ConnectError {
        ConnectError::new(err.to_string())
    }

    /// Adds the `data` the client receives with the error.
    pub fn with_data(mut self, data: serde_json::Value) -> ConnectError {
        self.data = Some(data);
        self
    }
}

impl From<String> for ConnectError {
    fn from(message: String) -> Self {
        ConnectError::new(message)
    }
}

impl From<&str> for ConnectError {
    fn from(message: &str) -> Self {
        ConnectError::new(message)
    }
}

pub(crate) type ConnectionHandler = Arc<dyn Fn(Socket) -> BoxFuture<'static, ()> + Send + Sync>;
pub(crate) type Middleware =
    Arc<dyn Fn(Socket) -> BoxFuture<'static, Result<(), ConnectError>> + Send + Sync>;
pub(crate) type DisconnectHandler = Arc<dyn Fn(Socket, DisconnectReason) + Send + Sync>;
pub(crate) type AnyHandler = Arc<dyn Fn(&Socket, &str, &Args) + Send + Sync>;
/// Per-packet socket middleware: `Err(message)` drops the event and reports
/// it to the socket's error handlers.
pub(crate) type PacketMiddleware =
    Arc<dyn Fn(&Socket, &str, &Args) -> Result<(), String> + Send + Sync>;
pub(crate) type ErrorHandler = Arc<dyn Fn(&Socket, &str) + Send + Sync>;
pub(crate) type ServerSideHandler =
    Arc<dyn Fn(Args, AckSender) -> BoxFuture<'static, ()> + Send + Sync>;

/// A stored event handler: socket, arguments and the ack to answer.
pub(crate) type BoxedEventHandler =
    Arc<dyn Fn(Socket, Args, AckSender) -> BoxFuture<'static, ()> + Send + Sync>;
