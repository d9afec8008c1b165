//! [`Packet`] and [`PacketData`], and the encoder.

use std::borrow::Cow;

use bytes::Bytes;
use serde_json::value::RawValue;

use super::scan::{json_string_len, write_json_string};
use super::Args;

/// The kind-specific content of a packet.
#[derive(Clone, Debug)]
pub enum PacketData {
    /// CONNECT (`0`), with the auth object, if any.
    Connect(Option<Box<RawValue>>),
    /// DISCONNECT (`1`).
    Disconnect,
    /// EVENT (`2`) or BINARY_EVENT (`5`, when `args` has attachments).
    /// A numeric event name (allowed by the protocol) is kept as its JSON
    /// text and re-encoded as a string.
    Event {
        /// The event name.
        event: String,
        /// Its arguments.
        args: Args,
        /// The id of the acknowledgement the sender waits for.
        ack: Option<u64>,
    },
    /// ACK (`3`) or BINARY_ACK (`6`, when `args` has attachments).
    Ack {
        /// The id of the acknowledged event.
        ack: u64,
        /// The answer's arguments.
        args: Args,
    },
    /// CONNECT_ERROR (`4`): an object (`{"message":…,"data":…}`) or a string.
    ConnectError(Box<RawValue>),
}

impl PartialEq for PacketData {
    /// Raw JSON values compare by text.
    fn eq(&self, other: &Self) -> bool {
        use PacketData::*;
        match (self, other) {
            (Connect(a), Connect(b)) => a.as_ref().map(|r| r.get()) == b.as_ref().map(|r| r.get()),
            (Disconnect, Disconnect) => true,
            (
                Event {
                    event: e1,
                    args: a1,
                    ack: k1,
                },
                Event {
                    event: e2,
                    args: a2,
                    ack: k2,
                },
            ) => e1 == e2 && a1 == a2 && k1 == k2,
            (Ack { ack: k1, args: a1 }, Ack { ack: k2, args: a2 }) => k1 == k2 && a1 == a2,
            (ConnectError(a), ConnectError(b)) => a.get() == b.get(),
            _ => false,
        }
    }
}

impl Eq for PacketData {}

/// A namespace name in a packet: the main namespace `"/"` (nearly every
/// packet) costs no allocation.
pub type NspName = Cow<'static, str>;

/// `name` as a packet's namespace, borrowed when it is `"/"`.
pub fn nsp_name(name: &str) -> NspName {
    if name == "/" {
        Cow::Borrowed("/")
    } else {
        Cow::Owned(name.to_owned())
    }
}

/// One Socket.IO packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Namespace, `"/"` by default.
    pub nsp: NspName,
    /// What the packet carries.
    pub data: PacketData,
}

impl Packet {
    /// EVENT / BINARY_EVENT.
    pub fn event(
        nsp: impl AsRef<str>,
        event: impl Into<String>,
        args: Args,
        ack: Option<u64>,
    ) -> Packet {
        Packet {
            nsp: nsp_name(nsp.as_ref()),
            data: PacketData::Event {
                event: event.into(),
                args,
                ack,
            },
        }
    }

    /// ACK / BINARY_ACK.
    pub fn ack(nsp: impl AsRef<str>, ack: u64, args: Args) -> Packet {
        Packet {
            nsp: nsp_name(nsp.as_ref()),
            data: PacketData::Ack { ack, args },
        }
    }

    /// CONNECT, with an optional payload (the server's `{"sid":…}` reply or
    /// a client's auth object).
    pub fn connect(nsp: impl AsRef<str>, payload: Option<Box<RawValue>>) -> Packet {
        Packet {
            nsp: nsp_name(nsp.as_ref()),
            data: PacketData::Connect(payload),
        }
    }

    /// CONNECT_ERROR with payload `{"message":<message>,"data":<data>}`,
    /// `data` omitted when `None`.
    pub fn connect_error(nsp: impl AsRef<str>, message: &str, data: Option<&RawValue>) -> Packet {
        let mut s = String::with_capacity(16 + message.len());
        s.push_str("{\"message\":");
        write_json_string(&mut s, message);
        if let Some(d) = data {
            s.push_str(",\"data\":");
            s.push_str(d.get());
        }
        s.push('}');
        let raw = RawValue::from_string(s).unwrap_or_else(|_| RawValue::NULL.to_owned());
        Packet {
            nsp: nsp_name(nsp.as_ref()),
            data: PacketData::ConnectError(raw),
        }
    }

    /// DISCONNECT.
    pub fn disconnect(nsp: impl AsRef<str>) -> Packet {
        Packet {
            nsp: nsp_name(nsp.as_ref()),
            data: PacketData::Disconnect,
        }
    }

    /// The arguments of an EVENT / ACK.
    pub fn args(&self) -> Option<&Args> {
        match &self.data {
            PacketData::Event { args, .. } | PacketData::Ack { args, .. } => Some(args),
            _ => None,
        }
    }

    /// The binary attachments that must be sent (each as one Engine.IO binary
    /// message) right after the text of this packet.
    pub fn attachments(&self) -> &[Bytes] {
        self.args().map(Args::attachments).unwrap_or_default()
    }

    /// The packet type digit as it goes on the wire (`'0'`..=`'6'`).
    pub fn type_char(&self) -> char {
        let binary = !self.attachments().is_empty();
        match &self.data {
            PacketData::Connect(_) => '0',
            PacketData::Disconnect => '1',
            PacketData::Event { .. } if binary => '5',
            PacketData::Event { .. } => '2',
            PacketData::Ack { .. } if binary => '6',
            PacketData::Ack { .. } => '3',
            PacketData::ConnectError(_) => '4',
        }
    }

    /// Append the Socket.IO text of this packet to `out` (which may already
    /// hold e.g. the Engine.IO `4` type char):
    /// `<type>[<n>-][<nsp>,][<ack id>][<json>]`, the namespace omitted when it
    /// is `"/"` (or empty); a namespace must start with `/` and contain no
    /// `,` to decode back the same. The attachments are not written: see
    /// [`Packet::attachments`].
    pub fn encode_into(&self, out: &mut String) {
        out.push(self.type_char());
        let n = self.attachments().len();
        if n > 0 {
            // Writing to a String cannot fail.
            push_decimal(out, n as u64);
            out.push('-');
        }
        if !self.nsp.is_empty() && self.nsp != "/" {
            out.push_str(&self.nsp);
            out.push(',');
        }
        match &self.data {
            PacketData::Connect(payload) => {
                if let Some(p) = payload {
                    out.push_str(p.get());
                }
            }
            PacketData::Disconnect => {}
            PacketData::Event { event, args, ack } => {
                if let Some(id) = ack {
                    push_decimal(out, *id);
                }
                out.push('[');
                write_json_string(out, event);
                if !args.json().is_empty() {
                    out.push(',');
                    push_utf8(out, args.json());
                }
                out.push(']');
            }
            PacketData::Ack { ack, args } => {
                push_decimal(out, *ack);
                out.push('[');
                push_utf8(out, args.json());
                out.push(']');
            }
            PacketData::ConnectError(p) => out.push_str(p.get()),
        }
    }

    /// The length of what [`Packet::encode_into`] appends, so the text can be
    /// allocated once at its exact size (a `Bytes` made of a full `String`
    /// needs no allocation of its own).
    pub fn encoded_len(&self) -> usize {
        let n = self.attachments().len();
        let mut len = 1;
        if n > 0 {
            len += decimal_len(n as u64) + 1;
        }
        if !self.nsp.is_empty() && self.nsp != "/" {
            len += self.nsp.len() + 1;
        }
        len + match &self.data {
            PacketData::Connect(payload) => payload.as_ref().map_or(0, |p| p.get().len()),
            PacketData::Disconnect => 0,
            PacketData::Event { event, args, ack } => {
                let json = args.json().len();
                ack.map_or(0, decimal_len)
                    + 2
                    + json_string_len(event)
                    + if json == 0 { 0 } else { json + 1 }
            }
            PacketData::Ack { ack, args } => decimal_len(*ack) + 2 + args.json().len(),
            PacketData::ConnectError(p) => p.get().len(),
        }
    }

    /// The Socket.IO text of this packet (see [`Packet::encode_into`]).
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }
}

/// `n` in decimal, without the formatting machinery (ack ids are on the hot path).
fn push_decimal(out: &mut String, n: u64) {
    out.push_str(itoa::Buffer::new().format(n));
}

fn decimal_len(n: u64) -> usize {
    n.checked_ilog10().map_or(1, |d| d as usize + 1)
}

/// Args JSON is UTF-8 unless an `Args::from_raw` caller broke the contract;
/// never panic in that case.
fn push_utf8(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

#[cfg(test)]
mod tests {
    use super::push_decimal;

    #[test]
    fn decimal_matches_display() {
        for n in [0, 7, 10, 99, 100, 12345, u64::from(u32::MAX), u64::MAX] {
            let mut out = String::from("x");
            push_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
    }
}
