//! Socket.IO v5 packet codec (the payload of Engine.IO `4` messages).
//!
//! Wire format of one packet:
//! `<type>[<attachments>-][<nsp>,][<ack id>][<JSON>]`, followed, for
//! BINARY_EVENT / BINARY_ACK, by `<attachments>` Engine.IO binary messages.
//!
//! * [`Packet`] / [`PacketData`]: a decoded packet; [`Packet::encode_into`]
//!   writes its text, [`Packet::attachments`] gives the binary messages that
//!   must follow it.
//! * [`Decoder`]: validating decoder (mirrors socket.io-parser 4.2.x).
//! * [`Args`]: arguments of an EVENT / ACK, kept as the exact JSON text the
//!   peer sent, plus binary attachments; [`Binary`] is a binary value inside
//!   arguments.
//! * [`msgpack`]: the format of Node's `socket.io-msgpack-parser`, chosen
//!   per server with [`Parser`].

mod args;
mod binary;
mod decoder;
mod error;
pub mod msgpack;
mod packet;
mod scan;

#[cfg(test)]
mod tests;

pub use args::Args;
pub use binary::Binary;
pub use decoder::Decoder;
pub use error::ParseError;
pub use packet::{nsp_name, NspName, Packet, PacketData};

/// The packet format of a server (Node's `parser` option): every client of
/// the server must use the same one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Parser {
    /// socket.io-parser: text packets, binaries as separate attachments.
    #[default]
    Default,
    /// socket.io-msgpack-parser 3.x: one binary message per packet, a
    /// msgpack map with binaries inline (see [`msgpack`]).
    Msgpack,
}

/// Event names a peer may not emit (socket.io-parser `RESERVED_EVENTS`).
pub const RESERVED_EVENTS: [&str; 6] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
];

/// Default bound on the number of attachments of one packet (Node's
/// `maxAttachments`).
pub const DEFAULT_MAX_ATTACHMENTS: usize = 10;

/// Deepest array/object nesting accepted in a packet payload (the outer
/// array counts). serde_json refuses to deserialize deeper values, so every
/// accepted packet's arguments can be deserialized.
pub const MAX_DEPTH: usize = 127;

/// Whether `name` is one of [`RESERVED_EVENTS`].
pub fn is_reserved_event(name: &str) -> bool {
    reserved_event(name).is_some()
}

/// The entry of [`RESERVED_EVENTS`] equal to `name`, if any.
pub(crate) fn reserved_event(name: &str) -> Option<&'static str> {
    RESERVED_EVENTS.iter().copied().find(|r| *r == name)
}
