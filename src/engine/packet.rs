//! Engine.IO v4 packets: the one-character type plus data, as sent in a WebSocket
//! frame or inside a polling payload.

use bytes::Bytes;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A packet received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// `0`: open (sent by servers only).
    Open,
    /// `1`: the client closes the session.
    Close,
    /// `2` with its data (`probe` during an upgrade).
    Ping(Bytes),
    /// `3` with its data (`probe` during an upgrade).
    Pong(Bytes),
    /// `4` text message; the data is valid UTF-8.
    Message(Bytes),
    /// A binary message (WebSocket binary frame, or `b<base64>` in a polling payload).
    Binary(Bytes),
    /// `5`: the client switches to WebSocket.
    Upgrade,
    /// `6`: nothing (ends a poll during an upgrade).
    Noop,
}

/// Why bytes could not be read as a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("empty packet")]
    /// No bytes.
    Empty,
    #[error("unknown packet type {0:?}")]
    /// A first byte that is no packet type.
    UnknownType(u8),
    #[error("packet is not valid UTF-8")]
    /// A text packet that is not UTF-8.
    InvalidUtf8,
    #[error("invalid base64 in binary packet")]
    /// A `b` packet whose base64 does not decode.
    InvalidBase64,
    /// A v3 payload's length prefix is malformed or does not match its packet.
    #[error("invalid length prefix in payload")]
    InvalidLength,
}

impl Packet {
    /// Decodes a text packet. `data` must already be valid UTF-8 (a WebSocket text
    /// frame, or a slice of a validated polling body).
    pub fn decode_text(data: Bytes) -> Result<Packet, PacketError> {
        let Some(&kind) = data.first() else {
            return Err(PacketError::Empty);
        };
        let rest = || data.slice(1..);
        Ok(match kind {
            b'0' => Packet::Open,
            b'1' => Packet::Close,
            b'2' => Packet::Ping(rest()),
            b'3' => Packet::Pong(rest()),
            b'4' => Packet::Message(rest()),
            b'5' => Packet::Upgrade,
            b'6' => Packet::Noop,
            other => return Err(PacketError::UnknownType(other)),
        })
    }

    /// The packet as the client would send it in a text frame (binary: `b` + base64).
    /// Used by tests and tools; the server writes [`Frame`]s.
    pub fn encode_text(&self) -> Vec<u8> {
        let (kind, data): (u8, &[u8]) = match self {
            Packet::Open => (b'0', b""),
            Packet::Close => (b'1', b""),
            Packet::Ping(d) => (b'2', d),
            Packet::Pong(d) => (b'3', d),
            Packet::Message(d) => (b'4', d),
            Packet::Upgrade => (b'5', b""),
            Packet::Noop => (b'6', b""),
            Packet::Binary(d) => {
                let mut out = vec![b'b'];
                out.extend_from_slice(base64_encode(d).as_bytes());
                return out;
            }
        };
        let mut out = Vec::with_capacity(1 + data.len());
        out.push(kind);
        out.extend_from_slice(data);
        out
    }
}

/// An encoded packet on its way to a client. Text frames hold the whole Engine.IO
/// packet (type character included) so that a broadcast is encoded once and the
/// same bytes are shared by every recipient and every transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A text frame (type character included).
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
}

impl Frame {
    /// A `4<text>` message.
    pub fn message(text: &str) -> Frame {
        let mut s = String::with_capacity(1 + text.len());
        s.push('4');
        s.push_str(text);
        Frame::Text(s.into())
    }

    /// A text frame from an already encoded packet (type character included).
    pub fn text(packet: impl Into<Utf8Bytes>) -> Frame {
        Frame::Text(packet.into())
    }

    /// `2`: a ping.
    pub const fn ping() -> Frame {
        Frame::Text(Utf8Bytes::from_static("2"))
    }

    /// `3`: the answer to a v3 client's ping.
    pub const fn pong() -> Frame {
        Frame::Text(Utf8Bytes::from_static("3"))
    }

    /// `1`: close.
    pub const fn close() -> Frame {
        Frame::Text(Utf8Bytes::from_static("1"))
    }

    /// `6`: noop.
    pub const fn noop() -> Frame {
        Frame::Text(Utf8Bytes::from_static("6"))
    }

    /// Bytes this frame takes in memory and on the wire (used by queue bounds).
    pub fn len(&self) -> usize {
        match self {
            Frame::Text(t) => t.len(),
            Frame::Binary(b) => b.len(),
        }
    }

    /// Whether it has no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

pub(crate) fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub(crate) fn base64_decode(data: &[u8]) -> Result<Vec<u8>, PacketError> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .map_err(|_| PacketError::InvalidBase64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn decodes_every_type() {
        let table: &[(&str, Packet)] = &[
            ("0", Packet::Open),
            ("1", Packet::Close),
            ("2", Packet::Ping(Bytes::new())),
            ("2probe", Packet::Ping(Bytes::from_static(b"probe"))),
            ("3probe", Packet::Pong(Bytes::from_static(b"probe"))),
            ("4hello", Packet::Message(Bytes::from_static(b"hello"))),
            ("4", Packet::Message(Bytes::new())),
            ("5", Packet::Upgrade),
            ("6", Packet::Noop),
        ];
        for (text, expected) in table {
            let got = Packet::decode_text(Bytes::from_static(text.as_bytes())).unwrap();
            assert_eq!(&got, expected, "{text}");
            assert_eq!(got.encode_text(), text.as_bytes());
        }
    }

    #[test]
    fn rejects_unknown_and_empty() {
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"abc")),
            Err(PacketError::UnknownType(b'a'))
        );
        assert_eq!(
            Packet::decode_text(Bytes::from_static(b"7")),
            Err(PacketError::UnknownType(b'7'))
        );
        assert_eq!(Packet::decode_text(Bytes::new()), Err(PacketError::Empty));
    }

    #[test]
    fn frames() {
        assert_eq!(Frame::message("hi"), Frame::Text("4hi".into()));
        assert_eq!(Frame::ping().len(), 1);
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        let text = ".{0,40}".prop_map(|s: String| Bytes::from(s));
        prop_oneof![
            Just(Packet::Open),
            Just(Packet::Close),
            Just(Packet::Upgrade),
            Just(Packet::Noop),
            text.clone().prop_map(Packet::Ping),
            text.clone().prop_map(Packet::Pong),
            text.prop_map(Packet::Message),
        ]
    }

    proptest! {
        #[test]
        fn text_round_trip(p in arb_packet()) {
            let encoded = Bytes::from(p.encode_text());
            prop_assert_eq!(Packet::decode_text(encoded).unwrap(), p);
        }

        #[test]
        fn decode_never_panics(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Packet::decode_text(Bytes::from(data));
        }
    }
}
