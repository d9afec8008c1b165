//! Messages between the rsio primary and its worker processes.
//!
//! The primary relays adapter messages between workers, like Node's `cluster` module with
//! `@socket.io/cluster-adapter`; this crate carries them:
//!
//! - [`message`]: the [`Message`] enum and the types it carries;
//! - [`codec`]: one message ⇄ bytes (`postcard` for control messages, raw pre-encoded
//!   frames after a small header for [`Broadcast`], decoded without copying);
//! - [`framing`]: the `u32` big-endian length prefix and its limit ([`IpcCodec`]);
//! - [`transport`]: [`IpcConnection`] over a Unix stream socket, with a cloneable
//!   non-blocking [`IpcSender`];
//! - [`requests`]: request ids and per-request timeouts ([`PendingRequests`]).
//!
//! This crate depends on no other part of rsio.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod framing;
pub mod message;
pub mod requests;
pub mod transport;

pub use codec::{decode, encode, CodecError, DEFAULT_MAX_FRAME_LENGTH};
pub use framing::{EncodedFrame, IpcCodec};
pub use message::{
    Broadcast, EventPayload, Frame, Message, RequestId, Session, SocketInfo, Target, WorkerIndex,
    PROTOCOL_VERSION,
};
pub use requests::{Partial, PendingRequests, ResponseCollector};
pub use transport::{
    pair, IpcConnection, IpcReader, IpcSender, SendError, DEFAULT_MAX_QUEUED_BYTES,
};
