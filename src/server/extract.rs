//! Extractors: what a handler asks for, by the types of its parameters, as in axum.
//!
//! A handler is an async closure whose parameters are extractors, in any order:
//!
//! | parameter | gives |
//! |---|---|
//! | [`Socket`] | the socket the event came from (or that connected) |
//! | [`Data<T>`] | the arguments, deserialized; a bad payload is answered on the client's ack with `{"error": …}` and the handler does not run |
//! | [`TryData<T>`] | the same as a `Result`, so the handler sees a bad payload |
//! | [`Args`] | the raw arguments, binary attachments included |
//! | [`AckSender`] | the acknowledgement the client asked for (sending is a no-op if it asked for none) |
//! | [`State<T>`] | a copy of the application state given to [`ServerBuilder::with_state`](super::ServerBuilder::with_state) |
//! | [`Extension<T>`] | a copy of the socket's value of type `T` ([`Socket::extensions`]) |
//!
//! `Data<T>` takes one argument per element when `T` is a tuple
//! (`Data<(String, i64)>`), and the first argument otherwise (`Data<Msg>`,
//! `Data<Vec<u8>>`, `Data<serde_json::Value>`). In a connection handler
//! (`io.ns(…)`), `Data<T>` is the client's `auth` object.
//!
//! ```no_run
//! use rsio::prelude::*;
//! # let io = Server::builder().build();
//! io.ns("/", |socket: Socket| async move {
//!     socket.on("add", |Data((a, b)): Data<(i64, i64)>, ack: AckSender| async move {
//!         let _ = ack.send(&(a + b));
//!     });
//!     socket.on("forward", |socket: Socket, args: Args| async move {
//!         let _ = socket.broadcast().emit("forward", args);
//!     });
//!     socket.on("bye", |socket: Socket| async move { socket.disconnect(false) });
//! });
//! ```
//!
//! Extraction reads the packet's arguments in place: only the [`Args`]
//! extractor takes them, and it copies nothing when no extractor after it reads them.

use std::{future::Future, sync::Arc};

use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;

use super::{ack::AckSender, handler::BoxedEventHandler, socket::Socket};
use crate::parser::{Args, ParseError};

/// What an extractor is taken from: the socket, the arguments and the ack.
pub struct EventContext {
    socket: Socket,
    args: Args,
    ack: AckSender,
    /// Extractors still to come that read the arguments: the last one may take them.
    readers: usize,
}

impl EventContext {
    /// The socket the event is about.
    pub fn socket(&self) -> &Socket {
        &self.socket
    }

    /// The event's arguments (the `auth` object, as one argument, for a connection).
    pub fn args(&self) -> &Args {
        &self.args
    }
}

/// Why an extractor could not give its value: the handler does not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// The arguments do not deserialize as [`Data<T>`] asks.
    #[error("invalid arguments: {0}")]
    Data(#[from] ParseError),
    /// No state of this type was given to the builder.
    #[error("no state of type {0} was given to Server::builder().with_state")]
    MissingState(&'static str),
    /// The socket has no extension of this type.
    #[error("the socket has no extension of type {0}")]
    MissingExtension(&'static str),
}

/// A handler parameter taken from the event (see the [module](self) docs).
pub trait FromEvent: Sized + Send + 'static {
    /// Whether it reads the arguments (so an [`Args`] before it copies them).
    #[doc(hidden)]
    const READS_ARGS: bool = false;

    /// Takes the value from the event.
    fn from_event(cx: &mut EventContext) -> Result<Self, Rejection>;

    /// Puts back what it took when another extractor of the same handler
    /// failed (the [`AckSender`], so that the failure can be answered).
    #[doc(hidden)]
    fn give_back(self, _cx: &mut EventContext) {}
}

impl FromEvent for Socket {
    fn from_event(cx: &mut EventContext) -> Result<Self, Rejection> {
        Ok(cx.socket.clone())
    }
}

impl FromEvent for AckSender {
    fn from_event(cx: &mut EventContext) -> Result<Self, Rejection> {
        Ok(std::mem::replace(&mut cx.ack, AckSender::none()))
    }

    fn give_back(self, cx: &mut EventContext) {
        cx.ack = self;
    }
}

impl FromEvent for Args {
    const READS_ARGS: bool = true;

    fn from_event(cx: &mut EventContext) -> Result<Self, Rejection> {
        cx.readers = cx.readers.saturating_sub(1);
        Ok(if cx.readers == 0 {
            std::mem::take(&mut cx.args)
        } else {
            cx.args.clone()
        })
    }
}

/// The arguments deserialized as `T` (a tuple: one element per argument;
/// anything else: the first argument). A payload that does not deserialize is
/// answered on the client's ack with `{"error": "invalid arguments: …"}`, and
/// the handler does not run; use [`TryData`] to see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Data<T>(pub T);

/// The arguments deserialized as `T`, as [`Data`], or why they do not.
#[derive(Debug)]
pub struct TryData<T>(pub Result<T, ParseError>);

fn decode<T: DeserializeOwned>(cx: &mut EventContext) -> Result<T, ParseError> {
    cx.readers = cx.readers.saturating_sub(1);
    if wants_tuple::<T>() {
        cx.args.decode::<T>()
    } else {
        cx.args.get::<T>(0)
    }
}

impl<T: DeserializeOwned + Send + 'static> FromEvent for Data<T> {
    const READS_ARGS: bool = true;

    fn from_event(cx: &mut EventContext) -> Result<Self, Rejection> {
        Ok(Data(decode(cx)?))
    }
}

impl<T: DeserializeOwned + Send + 'static> FromEvent for TryData<T> {
    const READS_ARGS: bool = true;

    fn from_event(cx: &mut EventContext) -> Result<Self, Rejection> {
        Ok(TryData(decode(cx)))
    }
}

/// A copy of the application state of type `T` given to
/// [`ServerBuilder::with_state`](super::ServerBuilder::with_state) (wrap what
/// is costly to clone in an `Arc`).
#[derive(Debug, Clone, Copy, Default)]
pub struct State<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromEvent for State<T> {
    fn from_event(cx: &mut EventContext) -> Result<Self, Rejection> {
        let shared = cx
            .socket
            .namespace()
            .state()
            .get::<T>()
            .ok_or(Rejection::MissingState(std::any::type_name::<T>()))?;
        Ok(State((*shared).clone()))
    }
}

/// A copy of the socket's value of type `T` ([`Socket::extensions`]); the
/// handler does not run when the socket has none.
#[derive(Debug, Clone, Copy, Default)]
pub struct Extension<T>(pub T);

impl<T: Clone + Send + Sync + 'static> FromEvent for Extension<T> {
    fn from_event(cx: &mut EventContext) -> Result<Self, Rejection> {
        cx.socket
            .extensions()
            .get::<T>()
            .map(Extension)
            .ok_or(Rejection::MissingExtension(std::any::type_name::<T>()))
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

/// A handler: an async closure (or fn) whose parameters are all [`FromEvent`]
/// extractors, in any order, up to eight of them; for events
/// ([`Socket::on`]) and connections ([`Namespace::on_connection`](super::Namespace::on_connection)).
pub trait Handler<M>: Send + Sync + 'static {
    /// Whether one of its extractors reads the arguments.
    #[doc(hidden)]
    const READS_ARGS: bool;

    /// Extracts the parameters and starts the handler, or answers the rejection.
    #[doc(hidden)]
    fn call(&self, cx: EventContext) -> BoxFuture<'static, ()>;
}

/// What a rejected event does: a log line and, if the client waits for an
/// ack, `{"error": …}` on it.
fn reject(cx: EventContext, rejection: Rejection) -> BoxFuture<'static, ()> {
    match &rejection {
        Rejection::Data(_) => {
            tracing::debug!(target: "socket.io:socket", id = %cx.socket.id(), "{rejection}")
        }
        _ => tracing::warn!(target: "socket.io:socket", id = %cx.socket.id(), "{rejection}"),
    }
    let _ = cx.ack.send_error(&rejection.to_string());
    Box::pin(std::future::ready(()))
}

macro_rules! impl_handler {
    ($($t:ident),*) => {
        #[allow(non_snake_case, unused_mut, unused_variables, unreachable_patterns)]
        impl<F, Fut, $($t,)*> Handler<($($t,)*)> for F
        where
            F: Fn($($t),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = ()> + Send + 'static,
            $($t: FromEvent,)*
        {
            const READS_ARGS: bool = false $(|| $t::READS_ARGS)*;

            fn call(&self, mut cx: EventContext) -> BoxFuture<'static, ()> {
                cx.readers = 0 $(+ $t::READS_ARGS as usize)*;
                // Every extractor runs (they are cheap), so that a failure can
                // give the ack back whichever parameter took it.
                $(let $t = $t::from_event(&mut cx);)*
                match ($($t,)*) {
                    ($(Ok($t),)*) => Box::pin(self($($t),*)),
                    ($($t,)*) => {
                        let mut first = None;
                        $(match $t {
                            Ok(v) => v.give_back(&mut cx),
                            Err(e) => {
                                first.get_or_insert(e);
                            }
                        })*
                        match first {
                            Some(rejection) => reject(cx, rejection),
                            None => unreachable!("a tuple of Ok values matched the first arm"),
                        }
                    }
                }
            }
        }
    };
}

impl_handler!();
impl_handler!(T1);
impl_handler!(T1, T2);
impl_handler!(T1, T2, T3);
impl_handler!(T1, T2, T3, T4);
impl_handler!(T1, T2, T3, T4, T5);
impl_handler!(T1, T2, T3, T4, T5, T6);
impl_handler!(T1, T2, T3, T4, T5, T6, T7);
impl_handler!(T1, T2, T3, T4, T5, T6, T7, T8);

/// An event handler as stored by a socket.
pub(crate) fn boxed_event<M, H: Handler<M>>(handler: H) -> BoxedEventHandler {
    Arc::new(move |socket, args, ack| {
        handler.call(EventContext {
            socket,
            args,
            ack,
            readers: 0,
        })
    })
}

/// A connection handler as stored by a namespace: its arguments are the `auth`
/// object, made only for handlers that read them.
pub(crate) fn boxed_connection<M, H: Handler<M>>(handler: H) -> super::handler::ConnectionHandler {
    Arc::new(move |socket: Socket| {
        let args = if H::READS_ARGS {
            Args::one(socket.handshake().auth()).unwrap_or_default()
        } else {
            Args::empty()
        };
        handler.call(EventContext {
            socket,
            args,
            ack: AckSender::none(),
            readers: 0,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(json: &'static str) -> Args {
        Args::from_raw(bytes::Bytes::from_static(json.as_bytes()), vec![])
    }

    fn decode_as<T: DeserializeOwned>(json: &'static str) -> Result<T, ParseError> {
        let a = args(json);
        if wants_tuple::<T>() {
            a.decode::<T>()
        } else {
            a.get::<T>(0)
        }
    }

    #[test]
    fn data_takes_first_argument_unless_tuple() {
        let v: serde_json::Value = decode_as("[0],1").unwrap();
        assert_eq!(v, serde_json::json!([0]));
        let s: String = decode_as("\"a\",1").unwrap();
        assert_eq!(s, "a");
        let (a, b): (String, i64) = decode_as("\"a\",1").unwrap();
        assert_eq!((a.as_str(), b), ("a", 1));
        let list: Vec<i64> = decode_as("[1,2],3").unwrap();
        assert_eq!(list, vec![1, 2]);
        assert!(decode_as::<(String, i64)>("1,\"a\"").is_err());
    }
}
