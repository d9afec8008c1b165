//! permessage-deflate (RFC 7692) on the WebSocket transport: negotiation,
//! inflating what clients send, compressing what the server sends.
//!
//! Only connections that negotiated it go through this module; the others keep
//! tungstenite's own reader and pay nothing for it.

mod inbound;
mod negotiate;
mod outbound;

pub(crate) use inbound::{DeflateError, DeflateIo};
pub(crate) use negotiate::negotiate;
pub(crate) use outbound::compress;
