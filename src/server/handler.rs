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
use serde::de::DeserializeOwned;

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
/// `CONNECT_ERROR {"message": …, "data": …}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConnectError {
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl ConnectError {
    pub fn new(message: impl Into<String>) -> ConnectError {
        ConnectError {
            message: message.into(),
            data: None,
        }
    }

    pub fn with_data(mut self, data: serde_json::Value) -> ConnectError {
        self.data = Some(data);
        self
    }
}

impl<E: std::fmt::Display> From<E> for ConnectError {
    fn from(e: E) -> Self {
        ConnectError::new(e.to_string())
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

/// Arguments a handler can take: the raw [`Args`], or [`Data<T>`].
pub trait FromArgs: Sized + Send + 'static {
    fn from_args(args: Args) -> Result<Self, crate::parser::ParseError>;
}

impl FromArgs for Args {
    fn from_args(args: Args) -> Result<Self, crate::parser::ParseError> {
        Ok(args)
    }
}

/// Typed arguments: a tuple type takes one element per argument
/// (`Data<(String, i64)>`); any other type takes the first argument
/// (`Data<String>`, `Data<serde_json::Value>`, `Data<Vec<u8>>`).
pub struct Data<T>(pub T);

impl<T: DeserializeOwned + Send + 'static> FromArgs for Data<T> {
    fn from_args(args: Args) -> Result<Self, crate::parser::ParseError> {
        if wants_tuple::<T>() {
            args.decode::<T>().map(Data)
        } else {
            args.get::<T>(0).map(Data)
        }
    }
}

/// Whether `T` deserializes from a tuple (asks serde for `deserialize_tuple`).
fn wants_tuple<T: DeserializeOwned>() -> bool {
    use serde::de::{Deserializer, Error, Visitor};

    #[derive(Debug)]
    struct Probed;
    impl std::fmt::Display for Probed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Probed {}
    impl Error for Probed {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Probed
        }
    }

    struct Probe<'a>(&'a mut bool);
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = Probed;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Probed> {
            Err(Probed)
        }
        fn deserialize_tuple<V: Visitor<'de>>(self, _: usize, _: V) -> Result<V::Value, Probed> {
            *self.0 = true;
            Err(Probed)
        }
        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            _: usize,
            _: V,
        ) -> Result<V::Value, Probed> {
            *self.0 = true;
            Err(Probed)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq map struct
            enum identifier ignored_any
        }
    }

    let mut tuple = false;
    let _ = T::deserialize(Probe(&mut tuple));
    tuple
}

/// An event handler: `async |socket, args| …` or `async |socket, args, ack| …`,
/// where `args` is any [`FromArgs`].
pub trait EventHandler<M>: Send + Sync + 'static {
    #[doc(hidden)]
    fn into_boxed(self) -> BoxedEventHandler;
}

impl<F, Fut, T> EventHandler<(T,)> for F
where
    F: Fn(Socket, T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    T: FromArgs,
{
    fn into_boxed(self) -> BoxedEventHandler {
        Arc::new(
            move |socket: Socket, args: Args, _ack: AckSender| match T::from_args(args) {
                Ok(args) => Box::pin(self(socket, args)) as BoxFuture<'static, ()>,
                Err(err) => {
                    tracing::debug!(target: "socket.io:socket", "arguments not understood: {err}");
                    Box::pin(async {})
                }
            },
        )
    }
}

impl<F, Fut, T> EventHandler<(T, AckSender)> for F
where
    F: Fn(Socket, T, AckSender) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    T: FromArgs,
{
    fn into_boxed(self) -> BoxedEventHandler {
        Arc::new(
            move |socket: Socket, args: Args, ack: AckSender| match T::from_args(args) {
                Ok(args) => Box::pin(self(socket, args, ack)) as BoxFuture<'static, ()>,
                Err(err) => {
                    tracing::debug!(target: "socket.io:socket", "arguments not understood: {err}");
                    let _ = ack.send_error(&format!("invalid arguments: {err}"));
                    Box::pin(async {})
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(json: &'static str) -> Args {
        Args::from_raw(bytes::Bytes::from_static(json.as_bytes()), vec![])
    }

    #[test]
    fn data_takes_first_argument_unless_tuple() {
        let Data(v) = Data::<serde_json::Value>::from_args(args("[0],1")).unwrap();
        assert_eq!(v, serde_json::json!([0]));
        let Data(s) = Data::<String>::from_args(args("\"a\",1")).unwrap();
        assert_eq!(s, "a");
        let Data((a, b)) = Data::<(String, i64)>::from_args(args("\"a\",1")).unwrap();
        assert_eq!((a.as_str(), b), ("a", 1));
        let Data(list) = Data::<Vec<i64>>::from_args(args("[1,2],3")).unwrap();
        assert_eq!(list, vec![1, 2]);
        assert!(Data::<(String, i64)>::from_args(args("1,\"a\"")).is_err());
    }
}
