//! The boundary where user code (handlers, middlewares, listeners) is called:
//! a panic there costs the socket it ran for, never the worker, the other
//! sockets or rsio's own bookkeeping.
//!
//! User futures run as `handler::run_inline` runs rsio's own: at once, up to
//! their first wait, then as a task. `catch_unwind` costs nothing until a
//! panic, so the hot path pays no more than before.

use std::{
    any::Any,
    future::Future,
    panic::{catch_unwind, AssertUnwindSafe},
    pin::Pin,
    task::{Context, Poll, Waker},
};

use futures_util::{future::BoxFuture, FutureExt};
use tracing::error;

use super::{handler::ConnectError, reason::DisconnectReason, socket::Socket};

/// Whose code is called, which decides what a panic in it costs.
#[derive(Clone, Copy)]
pub(crate) enum Guest<'a> {
    /// Code of a socket (an event handler, a listener): a panic disconnects it.
    Socket(&'a Socket, &'a str),
    /// A namespace middleware of a socket not yet connected: a panic refuses it.
    Connecting(&'a Socket),
    /// Code that belongs to no socket (server-side handlers): a panic is logged.
    Detached(&'a str),
}

/// [`Guest`] with owned parts, for the rest of a future that became a task.
enum OwnedGuest {
    Socket(Socket, String),
    Connecting(Socket),
    Detached(String),
}

impl Guest<'_> {
    fn to_owned(self) -> OwnedGuest {
        match self {
            Guest::Socket(socket, what) => OwnedGuest::Socket(socket.clone(), what.to_owned()),
            Guest::Connecting(socket) => OwnedGuest::Connecting(socket.clone()),
            Guest::Detached(what) => OwnedGuest::Detached(what.to_owned()),
        }
    }

    /// Logs the panic and makes its guest pay for it.
    fn panicked(self, payload: Box<dyn Any + Send>) {
        let message = panic_message(&*payload);
        match self {
            Guest::Socket(socket, what) => {
                error!(target: "socket.io:socket", id = %socket.id(), nsp = socket.ns(), event = what, panic = message, "user code panicked: disconnecting the socket");
                // On a task of its own: the panic may come from code called in
                // the middle of a delivery loop over this socket's namespace.
                let socket = socket.clone();
                spawn_or_run(move || socket.disconnect_with(DisconnectReason::HandlerPanic));
            }
            Guest::Connecting(socket) => {
                error!(target: "socket.io:socket", nsp = socket.ns(), panic = message, "a middleware panicked: refusing the connection");
                super::client::refuse(socket, ConnectError::new("server error"));
            }
            Guest::Detached(what) => {
                error!(target: "socket.io:server", event = what, panic = message, "user code panicked");
            }
        }
    }
}

impl OwnedGuest {
    fn panicked(&self, payload: Box<dyn Any + Send>) {
        match self {
            OwnedGuest::Socket(socket, what) => Guest::Socket(socket, what).panicked(payload),
            OwnedGuest::Connecting(socket) => Guest::Connecting(socket).panicked(payload),
            OwnedGuest::Detached(what) => Guest::Detached(what).panicked(payload),
        }
    }
}

/// Runs `f` on a new task when there is a runtime, else here.
fn spawn_or_run(f: impl FnOnce() + Send + 'static) {
    match tokio::runtime::Handle::try_current() {
        Ok(handle) => {
            handle.spawn(async move { f() });
        }
        Err(_) => f(),
    }
}

/// The text of a panic (`panic!("…")` payloads are `&str` or `String`).
fn panic_message(payload: &(dyn Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// Calls synchronous user code; `None` if it panicked (its guest has paid).
pub(crate) fn call<R>(guest: Guest<'_>, f: impl FnOnce() -> R) -> Option<R> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Some(r),
        Err(payload) => {
            guest.panicked(payload);
            None
        }
    }
}

/// Makes a user future with `make` and runs it until it first waits, then
/// hands the rest to the runtime; a panic anywhere in it is paid by `guest`.
pub(crate) fn run(guest: Guest<'_>, make: impl FnOnce() -> BoxFuture<'static, ()>) {
    let polled = catch_unwind(AssertUnwindSafe(|| {
        let mut fut = make();
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(&mut fut).poll(&mut cx) {
            Poll::Ready(()) => None,
            Poll::Pending => Some(fut),
        }
    }));
    match polled {
        Ok(None) => {}
        Ok(Some(fut)) => {
            let guest = guest.to_owned();
            // Polled again there with a real waker, which re-registers its interests.
            tokio::spawn(async move {
                if let Err(payload) = AssertUnwindSafe(fut).catch_unwind().await {
                    guest.panicked(payload);
                }
            });
        }
        Err(payload) => guest.panicked(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        let payload = catch_unwind(|| panic!("boom")).unwrap_err();
        assert_eq!(panic_message(&*payload), "boom");
        let n = 7;
        let payload = catch_unwind(|| panic!("boom {n}")).unwrap_err();
        assert_eq!(panic_message(&*payload), "boom 7");
        let payload = catch_unwind(|| std::panic::panic_any(1u8)).unwrap_err();
        assert_eq!(panic_message(&*payload), "(not a string)");
    }

    #[tokio::test]
    async fn a_detached_panic_is_caught_inline_and_after_an_await() {
        run(Guest::Detached("inline"), || {
            Box::pin(async { panic!("now") })
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        run(Guest::Detached("later"), || {
            Box::pin(async move {
                let _ = rx.await;
                panic!("later");
            })
        });
        drop(tx);
        // The spawned rest panicked inside its task, caught: the runtime goes on.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert_eq!(call(Guest::Detached("sync"), || 1), Some(1));
        assert_eq!(
            call(Guest::Detached("sync"), || -> u8 { panic!("x") }),
            None
        );
    }
}
