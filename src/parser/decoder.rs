//! [`Decoder`]: validating Socket.IO packet decoder (mirrors the rules of
//! socket.io-parser 4.2.x).

use std::fmt;
use std::ops::Range;

use bytes::Bytes;
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use super::binary::placeholder_index;
use super::scan::depth_exceeds;
use super::{
    reserved_event, Args, Packet, PacketData, ParseError, Parser, DEFAULT_MAX_ATTACHMENTS,
    MAX_DEPTH,
};

/// A BINARY_EVENT / BINARY_ACK waiting for its attachments.
#[derive(Debug)]
struct Pending {
    packet: Packet,
    expected: usize,
    received: Vec<Bytes>,
}

/// Decodes the Engine.IO messages of one connection into packets.
///
/// Feed every Engine.IO text message (`4…`, without the `4`) to
/// [`decode_text`](Decoder::decode_text) and every binary message to
/// [`decode_binary`](Decoder::decode_binary). Any error means the peer broke
/// the protocol (close the connection); the decoder is idle again after it.
#[derive(Debug)]
pub struct Decoder {
    max_attachments: usize,
    /// Packets come as msgpack binary messages (no attachments then).
    msgpack: bool,
    /// Boxed: one decoder lives per connection, and most never see a binary packet.
    pending: Option<Box<Pending>>,
}

impl Default for Decoder {
    /// A decoder with Node's default bound of 10 attachments.
    fn default() -> Self {
        Decoder::new(DEFAULT_MAX_ATTACHMENTS)
    }
}

impl Decoder {
    /// A decoder accepting at most `max_attachments` attachments per packet.
    pub fn new(max_attachments: usize) -> Decoder {
        Decoder {
            max_attachments,
            msgpack: false,
            pending: None,
        }
    }

    /// A decoder for `parser`'s packet format; `max_attachments` only
    /// applies to [`Parser::Default`] (msgpack binaries are inline, bounded
    /// by the message size).
    pub fn with_parser(parser: Parser, max_attachments: usize) -> Decoder {
        Decoder {
            msgpack: parser == Parser::Msgpack,
            ..Decoder::new(max_attachments)
        }
    }

    /// The bound given to [`Decoder::new`].
    pub fn max_attachments(&self) -> usize {
        self.max_attachments
    }

    /// Whether a binary packet is waiting for attachments.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Drop a packet waiting for attachments, if any.
    pub fn reset(&mut self) {
        self.pending = None;
    }

    /// Feed one Engine.IO text message (the part after the `4`).
    /// `Ok(Some(packet))` when the packet is complete, `Ok(None)` when it now
    /// waits for binary attachments. The arguments of the packet are a
    /// zero-copy slice of `text`.
    pub fn decode_text(&mut self, text: Bytes) -> Result<Option<Packet>, ParseError> {
        if self.msgpack {
            return Err(ParseError::TextWithMsgpack);
        }
        if self.pending.take().is_some() {
            return Err(ParseError::UnexpectedText);
        }
        let (packet, expected) = parse_text(&text, self.max_attachments)?;
        if expected == 0 {
            return Ok(Some(packet));
        }
        self.pending = Some(Box::new(Pending {
            packet,
            expected,
            received: Vec::with_capacity(expected),
        }));
        Ok(None)
    }

    /// Feed one Engine.IO binary message (an attachment).
    pub fn decode_binary(&mut self, data: Bytes) -> Result<Option<Packet>, ParseError> {
        if self.msgpack {
            return super::msgpack::decode_packet(&data).map(Some);
        }
        let Some(pending) = self.pending.as_mut() else {
            return Err(ParseError::UnexpectedBinary);
        };
        pending.received.push(data);
        if pending.received.len() < pending.expected {
            return Ok(None);
        }
        let Some(pending) = self.pending.take() else {
            return Err(ParseError::UnexpectedBinary);
        };
        let Pending {
            mut packet,
            received,
            ..
        } = *pending;
        if let PacketData::Event { args, .. } | PacketData::Ack { args, .. } = &mut packet.data {
            check_placeholders(args.json(), received.len())?;
            *args = Args::from_raw(args.json_bytes().clone(), received);
        }
        Ok(Some(packet))
    }
}

/// Parse the text of a packet; returns it and its attachment count.
fn parse_text(text: &Bytes, max_attachments: usize) -> Result<(Packet, usize), ParseError> {
    let bytes: &[u8] = text;
    let ty = match bytes.first() {
        Some(&b @ b'0'..=b'6') => b - b'0',
        _ => return Err(ParseError::UnknownType),
    };
    let mut i = 1;

    // <attachments>-
    let mut attachments = 0usize;
    if ty == 5 || ty == 6 {
        let (n, end) = digits(bytes, i, usize::MAX as u64).ok_or(ParseError::InvalidAttachments)?;
        if end == i || bytes.get(end) != Some(&b'-') {
            return Err(ParseError::InvalidAttachments);
        }
        attachments = usize::try_from(n).map_err(|_| ParseError::InvalidAttachments)?;
        if attachments > max_attachments {
            return Err(ParseError::TooManyAttachments);
        }
        i = end + 1;
    }

    // <nsp>,
    let mut nsp = super::packet::nsp_name("/");
    if bytes.get(i) == Some(&b'/') {
        let rest = bytes.get(i..).unwrap_or_default();
        let (raw, next) = match rest.iter().position(|&b| b == b',') {
            Some(p) => (rest.get(..p).unwrap_or_default(), i + p + 1),
            None => (rest, bytes.len()),
        };
        nsp = super::packet::nsp_name(
            std::str::from_utf8(raw).map_err(|_| ParseError::InvalidNamespace)?,
        );
        i = next;
    }

    // <ack id>
    let (id, end) = digits(bytes, i, u64::MAX).ok_or(ParseError::InvalidAckId)?;
    let ack = (end > i).then_some(id);
    i = end;

    // <json>: its UTF-8 is checked once here, then parsed from `&str` (serde_json's
    // `StrRead` does not check it again).
    let payload = std::str::from_utf8(bytes.get(i..).unwrap_or_default())
        .map_err(|_| ParseError::InvalidPayload)?;
    let payload = if payload.is_empty() {
        None
    } else if depth_exceeds(payload.as_bytes(), MAX_DEPTH) {
        return Err(ParseError::InvalidPayload);
    } else {
        Some(payload)
    };

    let data = match ty {
        0 => match payload {
            None => PacketData::Connect(None),
            Some(p) => {
                let raw = parse_raw(p)?;
                if !raw.get().starts_with('{') {
                    return Err(ParseError::InvalidPayload);
                }
                PacketData::Connect(Some(raw.to_owned()))
            }
        },
        1 => match payload {
            None => PacketData::Disconnect,
            Some(_) => return Err(ParseError::InvalidPayload),
        },
        4 => {
            let raw = parse_raw(payload.ok_or(ParseError::InvalidPayload)?)?;
            if !(raw.get().starts_with('{') || raw.get().starts_with('"')) {
                return Err(ParseError::InvalidPayload);
            }
            PacketData::ConnectError(raw.to_owned())
        }
        2 | 5 => {
            let p = payload.ok_or(ParseError::InvalidPayload)?;
            let shape = parse_array(p)?;
            let first = shape.first.ok_or(ParseError::InvalidPayload)?.get();
            let event = if first.starts_with('"') {
                let name = event_name(first)?;
                if let Some(reserved) = reserved_event(&name) {
                    return Err(ParseError::ReservedEvent(reserved));
                }
                name
            } else if first.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
                first.to_owned()
            } else {
                return Err(ParseError::InvalidPayload);
            };
            let json = slice_args(text, i, p, shape.second, shape.last)?;
            PacketData::Event {
                event,
                args: Args::from_raw(json, Vec::new()),
                ack,
            }
        }
        _ => {
            // 3 | 6
            let p = payload.ok_or(ParseError::InvalidPayload)?;
            let ack = ack.ok_or(ParseError::InvalidAckId)?;
            let shape = parse_array(p)?;
            let json = slice_args(text, i, p, shape.first, shape.last)?;
            PacketData::Ack {
                ack,
                args: Args::from_raw(json, Vec::new()),
            }
        }
    };
    Ok((Packet { nsp, data }, attachments))
}

/// Read a run of ASCII digits starting at `start`: `(value, end)`, `None` on
/// overflow of `max`. No digits gives `(0, start)`.
fn digits(bytes: &[u8], start: usize, max: u64) -> Option<(u64, usize)> {
    let mut n: u64 = 0;
    let mut i = start;
    while let Some(&b) = bytes.get(i) {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        if n > max {
            return None;
        }
        i += 1;
    }
    Some((n, i))
}

fn parse_raw(payload: &str) -> Result<&RawValue, ParseError> {
    serde_json::from_str(payload).map_err(|_| ParseError::InvalidPayload)
}

/// The event name from its JSON string literal (already validated by the
/// array parse): copied as is when it holds no escape.
fn event_name(literal: &str) -> Result<String, ParseError> {
    match literal.strip_prefix('"').and_then(|l| l.strip_suffix('"')) {
        Some(inner) if !inner.contains('\\') => Ok(inner.to_owned()),
        _ => serde_json::from_str(literal).map_err(|_| ParseError::InvalidPayload),
    }
}

/// First, second and last element of a JSON array, borrowed from the input.
struct ArrayShape<'a> {
    first: Option<&'a RawValue>,
    second: Option<&'a RawValue>,
    last: Option<&'a RawValue>,
}

impl<'de> Deserialize<'de> for ArrayShape<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ArrayShape<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut shape = ArrayShape {
                    first: None,
                    second: None,
                    last: None,
                };
                let mut n = 0usize;
                while let Some(el) = seq.next_element::<&'de RawValue>()? {
                    match n {
                        0 => shape.first = Some(el),
                        1 => shape.second = Some(el),
                        _ => {}
                    }
                    shape.last = Some(el);
                    n = n.saturating_add(1);
                }
                Ok(shape)
            }
        }
        d.deserialize_seq(V)
    }
}

fn parse_array(payload: &str) -> Result<ArrayShape<'_>, ParseError> {
    serde_json::from_str(payload).map_err(|_| ParseError::InvalidPayload)
}

/// Position of `part` (borrowed from `base`) inside `base`.
fn range_in(base: &[u8], part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(base.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (end <= base.len()).then_some(start..end)
}

/// Zero-copy slice of `text` from the start of `from` to the end of `to`
/// (two elements of `payload`, which starts at `payload_at` in `text`).
fn slice_args(
    text: &Bytes,
    payload_at: usize,
    payload: &str,
    from: Option<&RawValue>,
    to: Option<&RawValue>,
) -> Result<Bytes, ParseError> {
    let (Some(from), Some(to)) = (from, to) else {
        return Ok(Bytes::new());
    };
    let a = range_in(payload.as_bytes(), from.get()).ok_or(ParseError::InvalidPayload)?;
    let b = range_in(payload.as_bytes(), to.get()).ok_or(ParseError::InvalidPayload)?;
    let start = payload_at.checked_add(a.start);
    let end = payload_at.checked_add(b.end);
    match (start, end) {
        (Some(s), Some(e)) if s <= e && e <= text.len() => Ok(text.slice(s..e)),
        _ => Err(ParseError::InvalidPayload),
    }
}

/// Every object with `"_placeholder": true` must have a `num` that is an
/// integer in `0..count` (socket.io-parser `_reconstructPacket`).
///
/// Deviation from Node: the args are parsed into a `serde_json::Value`, so a
/// binary packet holding a number beyond the f64 range (`1e400`, Infinity in
/// JavaScript) is rejected as `InvalidPayload`.
fn check_placeholders(json: &[u8], count: usize) -> Result<(), ParseError> {
    fn ok(v: &Value, count: usize) -> bool {
        match v {
            Value::Array(a) => a.iter().all(|x| ok(x, count)),
            Value::Object(m) => {
                if m.get("_placeholder") == Some(&Value::Bool(true)) {
                    m.get("num")
                        .and_then(placeholder_index)
                        .is_some_and(|i| i < count)
                } else {
                    m.values().all(|x| ok(x, count))
                }
            }
            _ => true,
        }
    }
    let mut buf = Vec::with_capacity(json.len() + 2);
    buf.push(b'[');
    buf.extend_from_slice(json);
    buf.push(b']');
    let value: Value = serde_json::from_slice(&buf).map_err(|_| ParseError::InvalidPayload)?;
    if ok(&value, count) {
        Ok(())
    } else {
        Err(ParseError::IllegalPlaceholder)
    }
}
