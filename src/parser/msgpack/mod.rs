//! The msgpack packet format of Node's `socket.io-msgpack-parser` 3.x: each
//! packet is one msgpack map `{type, data, nsp, id?}` sent as one Engine.IO
//! binary message; binary values travel inline as msgpack `bin`, so there
//! are no attachments and no BINARY_EVENT / BINARY_ACK types.
//!
//! Internally arguments stay JSON text plus attachments ([`Args`]), so the
//! rest of rsio is the same for both formats: a decoded packet is converted
//! once, and an outgoing packet is encoded once (then shared by every
//! recipient, relayed between workers and logged for recovery as is).

mod read;
mod write;

#[cfg(test)]
mod tests;

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use self::read::{Head, Reader};
use self::write::{array_header, fix_header, json_elements, json_value, put_str, put_uint};
use super::{nsp_name, reserved_event, Args, Packet, PacketData, ParseError};

/// Decode one packet (one Engine.IO binary message). Bin values of the
/// arguments become zero-copy attachments of `data`.
///
/// Checks what socket.io-msgpack-parser checks (a map with an integer
/// `type` 0..=4, a string `nsp`, a `data` of the right shape, an integer
/// `id` if any), plus what socket.io-parser checks for text packets: an
/// EVENT starts with a string (or number) that is not a reserved event name,
/// an ACK has an id, nesting is at most [`MAX_DEPTH`](super::MAX_DEPTH)
/// deep, and nothing follows the map.
pub fn decode_packet(data: &Bytes) -> Result<Packet, ParseError> {
    let mut r = Reader::new(data);
    let Head::Map(n) = r.head()? else {
        return Err(ParseError::UnknownType);
    };
    let (mut ty, mut nsp, mut id, mut payload) = (None, None, None, None);
    for _ in 0..n {
        let key = r.head()?;
        let Head::Str(s, e) = key else {
            // Other keys are ignored, as in JavaScript, but still checked.
            r.skip_rest(key, 0)?;
            r.skip(0)?;
            continue;
        };
        let key = r.str(s, e)?;
        let at = r.pos;
        let head = r.head()?;
        match key {
            "type" => ty = Some(head),
            "nsp" => nsp = Some(head),
            "id" => id = Some(head),
            "data" => payload = Some(at),
            _ => {}
        }
        // Walk past the value (checking it), whatever it is.
        r.pos = at;
        r.skip(0)?;
    }
    if !r.at_end() {
        return Err(ParseError::InvalidMsgpack);
    }
    let ty = match ty.map(integer) {
        Some(Some(t @ 0..=4)) => t,
        _ => return Err(ParseError::UnknownType),
    };
    let nsp = match nsp {
        Some(Head::Str(s, e)) => nsp_name(r.str(s, e)?),
        _ => return Err(ParseError::InvalidNamespace),
    };
    let id = match id {
        None | Some(Head::Undefined) => None,
        Some(h) => Some(
            integer(h)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or(ParseError::InvalidAckId)?,
        ),
    };
    // The value of `data`, `None` when absent or undefined.
    let mut payload = match payload {
        Some(at) => {
            r.pos = at;
            match r.head()? {
                Head::Undefined => None,
                head => Some(head),
            }
        }
        None => None,
    };
    let pdata = match (ty, payload.take()) {
        (0, None) => PacketData::Connect(None),
        (0, Some(h @ Head::Map(_))) => PacketData::Connect(Some(raw(&mut r, h)?)),
        (1, None) => PacketData::Disconnect,
        (4, Some(h @ (Head::Map(_) | Head::Str(..)))) => PacketData::ConnectError(raw(&mut r, h)?),
        (2, Some(Head::Array(len))) if len > 0 => {
            let event = match r.head()? {
                Head::Str(s, e) => {
                    let name = r.str(s, e)?;
                    if let Some(reserved) = reserved_event(name) {
                        return Err(ParseError::ReservedEvent(reserved));
                    }
                    name.to_owned()
                }
                Head::Uint(u) => u.to_string(),
                Head::Int(i) => i.to_string(),
                _ => return Err(ParseError::InvalidPayload),
            };
            PacketData::Event {
                event,
                args: args(&mut r, len - 1)?,
                ack: id,
            }
        }
        (3, Some(Head::Array(len))) => PacketData::Ack {
            ack: id.ok_or(ParseError::InvalidAckId)?,
            args: args(&mut r, len)?,
        },
        _ => return Err(ParseError::InvalidPayload),
    };
    Ok(Packet { nsp, data: pdata })
}

/// An integral number (as JavaScript's `Number.isInteger` sees it).
fn integer(h: Head) -> Option<i128> {
    match h {
        Head::Uint(u) => Some(i128::from(u)),
        Head::Int(i) => Some(i128::from(i)),
        Head::Float(f) if f.is_finite() && f.fract() == 0.0 && f.abs() < 1.8e19 => Some(f as i128),
        _ => None,
    }
}

/// A CONNECT / CONNECT_ERROR payload as raw JSON (binaries are refused there).
fn raw(r: &mut Reader<'_>, head: Head) -> Result<Box<RawValue>, ParseError> {
    let mut out = String::new();
    let mut atts = Vec::new();
    r.json_of(head, &mut out, &mut atts, 0)?;
    if !atts.is_empty() {
        return Err(ParseError::InvalidPayload);
    }
    RawValue::from_string(out).map_err(|_| ParseError::InvalidPayload)
}

/// The next `n` values as [`Args`].
fn args(r: &mut Reader<'_>, n: usize) -> Result<Args, ParseError> {
    let mut out = String::new();
    let mut atts = Vec::new();
    // The data array is the first level.
    r.elements(n, &mut out, &mut atts, 1)?;
    Ok(Args::from_raw(Bytes::from(out), atts))
}

/// The msgpack encoding of `packet` (one Engine.IO binary message):
/// `{type, data, nsp, id?}`, attachments inline as `bin`.
pub fn encode_packet(packet: &Packet) -> Result<Vec<u8>, ParseError> {
    let mut out = Vec::with_capacity(32 + packet.args().map_or(0, |a| a.json().len()));
    let (ty, id) = match &packet.data {
        PacketData::Connect(_) => (0, None),
        PacketData::Disconnect => (1, None),
        PacketData::Event { ack, .. } => (2, *ack),
        PacketData::Ack { ack, .. } => (3, Some(*ack)),
        PacketData::ConnectError(_) => (4, None),
    };
    let has_data = !matches!(
        packet.data,
        PacketData::Disconnect | PacketData::Connect(None)
    );
    out.push(0x80 | (2 + u8::from(has_data) + u8::from(id.is_some())));
    put_str(&mut out, "type");
    out.push(ty);
    if has_data {
        put_str(&mut out, "data");
        match &packet.data {
            PacketData::Connect(Some(p)) | PacketData::ConnectError(p) => {
                json_value(p.get().as_bytes(), &[], &mut out)?;
            }
            PacketData::Event { event, args, .. } => {
                let at = out.len();
                out.push(0);
                put_str(&mut out, event);
                let n = json_elements(args.json(), args.attachments(), &mut out)?;
                fix_header(&mut out, at, array_header(n + 1));
            }
            PacketData::Ack { args, .. } => {
                let at = out.len();
                out.push(0);
                let n = json_elements(args.json(), args.attachments(), &mut out)?;
                fix_header(&mut out, at, array_header(n));
            }
            PacketData::Connect(None) | PacketData::Disconnect => {}
        }
    }
    put_str(&mut out, "nsp");
    put_str(
        &mut out,
        if packet.nsp.is_empty() {
            "/"
        } else {
            &packet.nsp
        },
    );
    if let Some(id) = id {
        put_str(&mut out, "id");
        put_uint(&mut out, id);
    }
    Ok(out)
}

/// `packet` (an encoded packet map) with the string `arg` appended to its
/// `data` array: how a connection-state-recovery offset is added to an
/// already encoded broadcast. `None` when `packet` has no `data` array.
pub fn append_string_arg(packet: &Bytes, arg: &str) -> Option<Bytes> {
    let mut r = Reader::new(packet);
    let Ok(Head::Map(n)) = r.head() else {
        return None;
    };
    for _ in 0..n {
        let key = r.head().ok()?;
        let is_data = matches!(key, Head::Str(s, e) if r.str(s, e).ok() == Some("data"));
        let at = r.pos;
        let head = r.head().ok()?;
        let (Head::Array(len), true) = (head, is_data) else {
            r.pos = at;
            r.skip(0).ok()?;
            continue;
        };
        let body = r.pos;
        r.pos = at;
        r.skip(0).ok()?;
        let end = r.pos;
        let (h, hn) = array_header(len + 1);
        let mut out = BytesMut::with_capacity(packet.len() + hn + arg.len() + 5);
        out.put_slice(packet.get(..at)?);
        out.put_slice(h.get(..hn)?);
        out.put_slice(packet.get(body..end)?);
        let mut s = Vec::with_capacity(arg.len() + 5);
        put_str(&mut s, arg);
        out.put_slice(&s);
        out.put_slice(packet.get(end..)?);
        return Some(out.freeze());
    }
    None
}
