//! The wire format of `@socket.io/redis-streams-adapter` 0.3.1: stream entries
//! (`uid`, `nsp`, `type`, `data` as JSON, or base64 msgpack when binary), PUB/SUB
//! payloads (msgpack of the whole message), and the conversion between Node's
//! unencoded packets (`{type: 2, data: [event, …args]}`, binary inline as msgpack
//! `bin`) and rsio's encoded frames (placeholders + attachments).

use base64::Engine as _;
use bytes::Bytes;
use rmpv::Value as Mp;
use serde_json::{Map, Value};

use super::super::{BroadcastFlags, BroadcastOptions, EncodedPacket};
use crate::engine::Frame;

/// `MessageType` of socket.io-adapter 2.5.x (types 1, 2 and 13 are never sent by 0.3.x).
pub(crate) mod kind {
    pub const BROADCAST: u8 = 3;
    pub const SOCKETS_JOIN: u8 = 4;
    pub const SOCKETS_LEAVE: u8 = 5;
    pub const DISCONNECT_SOCKETS: u8 = 6;
    pub const FETCH_SOCKETS: u8 = 7;
    pub const FETCH_SOCKETS_RESPONSE: u8 = 8;
    pub const SERVER_SIDE_EMIT: u8 = 9;
    pub const SERVER_SIDE_EMIT_RESPONSE: u8 = 10;
    pub const BROADCAST_CLIENT_COUNT: u8 = 11;
    pub const BROADCAST_ACK: u8 = 12;
}

/// Why a message from Redis could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("missing field {0}")]
    Missing(&'static str),
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    #[error("msgpack: {0}")]
    Msgpack(#[from] rmpv::decode::Error),
    #[error("base64: {0}")]
    Base64(#[from] base64::DecodeError),
}

/// Java's `String.hashCode` over UTF-16 code units, as the adapter computes it.
pub fn hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// The stream of namespace `nsp`: `name`, or `name-<hashCode(nsp) % count>` (JS
/// `%`, which keeps the sign) when there are several.
pub fn stream_name(name: &str, count: usize, nsp: &str) -> String {
    if count <= 1 {
        return name.to_string();
    }
    format!("{name}-{}", hash_code(nsp) % count as i32)
}

/// A message's `data`, JSON-shaped: binary values are placeholders
/// (`{"_placeholder":true,"num":N}`) into `attachments`, as in rsio's `Args`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Data {
    pub json: Value,
    pub attachments: Vec<Bytes>,
}

/// One cluster message (`ClusterMessage` / `ClusterResponse`).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub kind: u8,
    pub uid: String,
    pub nsp: String,
    pub data: Option<Data>,
}

fn is_placeholder(map: &Map<String, Value>) -> Option<usize> {
    if map.len() == 2 && map.get("_placeholder") == Some(&Value::Bool(true)) {
        return map.get("num")?.as_u64().map(|n| n as usize);
    }
    None
}

/// JSON (with placeholders) to msgpack, binary values back inline.
pub fn to_msgpack(v: &Value, attachments: &[Bytes]) -> Mp {
    match v {
        Value::Null => Mp::Nil,
        Value::Bool(b) => Mp::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_u64() {
                Mp::from(i)
            } else if let Some(i) = n.as_i64() {
                Mp::from(i)
            } else {
                let f = n.as_f64().unwrap_or_default();
                // A JS number with no fraction is written as an integer by
                // Node's msgpack encoders (`1.0` is `1`).
                if f.fract() == 0.0 && f.abs() < 9.2e18 {
                    Mp::from(f as i64)
                } else {
                    Mp::F64(f)
                }
            }
        }
        Value::String(s) => Mp::from(s.as_str()),
        Value::Array(a) => Mp::Array(a.iter().map(|v| to_msgpack(v, attachments)).collect()),
        Value::Object(map) => {
            if let Some(b) = is_placeholder(map).and_then(|n| attachments.get(n)) {
                return Mp::Binary(b.to_vec());
            }
            Mp::Map(
                map.iter()
                    .map(|(k, v)| (Mp::from(k.as_str()), to_msgpack(v, attachments)))
                    .collect(),
            )
        }
    }
}

/// msgpack to JSON: `bin` becomes a placeholder (numbered in document order), a
/// timestamp (ext −1, Node's `Date`) its ISO string, as `JSON.stringify` would.
pub fn from_msgpack(v: Mp, attachments: &mut Vec<Bytes>) -> Value {
    match v {
        Mp::Nil => Value::Null,
        Mp::Boolean(b) => Value::Bool(b),
        Mp::Integer(i) => i
            .as_u64()
            .map(Value::from)
            .or_else(|| i.as_i64().map(Value::from))
            .unwrap_or(Value::Null),
        Mp::F32(f) => serde_json::Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        Mp::F64(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        Mp::String(s) => Value::String(s.into_str().unwrap_or_default()),
        Mp::Binary(b) => {
            attachments.push(Bytes::from(b));
            serde_json::json!({"_placeholder": true, "num": attachments.len() - 1})
        }
        Mp::Array(a) => Value::Array(
            a.into_iter()
                .map(|v| from_msgpack(v, attachments))
                .collect(),
        ),
        Mp::Map(entries) => Value::Object(
            entries
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Mp::String(s) => s.into_str().unwrap_or_default(),
                        other => other.to_string(),
                    };
                    (key, from_msgpack(v, attachments))
                })
                .collect(),
        ),
        Mp::Ext(-1, bytes) => timestamp(&bytes).map_or(Value::Null, Value::String),
        Mp::Ext(..) => Value::Null,
    }
}

/// A msgpack timestamp (32, 64 or 96 bit) as `Date.prototype.toISOString` writes it.
pub(crate) fn timestamp(b: &[u8]) -> Option<String> {
    let (secs, nanos): (i64, u32) = match b.len() {
        4 => (i64::from(u32::from_be_bytes(b.try_into().ok()?)), 0),
        8 => {
            let v = u64::from_be_bytes(b.try_into().ok()?);
            ((v & 0x3_ffff_ffff) as i64, (v >> 34) as u32)
        }
        12 => (
            i64::from_be_bytes(b[4..].try_into().ok()?),
            u32::from_be_bytes(b[..4].try_into().ok()?),
        ),
        _ => return None,
    };
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Some(format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        nanos / 1_000_000
    ))
}

fn msgpack_bytes(v: &Mp) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Writing to a Vec cannot fail.
    let _ = rmpv::encode::write_value(&mut out, v);
    out
}

/// Types whose stream `data` may be base64 msgpack (`hasBinary` is checked only for them).
fn may_be_binary(kind: u8) -> bool {
    matches!(kind, 3 | 8 | 9 | 10 | 12)
}

/// The `data` field of a stream entry: JSON unless there are attachments.
pub fn entry_data(kind: u8, data: &Data) -> String {
    if data.attachments.is_empty() || !may_be_binary(kind) {
        return data.json.to_string();
    }
    let mp = to_msgpack(&data.json, &data.attachments);
    base64::engine::general_purpose::STANDARD.encode(msgpack_bytes(&mp))
}

/// Reads a stream entry's `data` field: JSON when it starts with `{`, else
/// base64 msgpack.
pub fn parse_entry_data(text: &[u8]) -> Result<Data, CodecError> {
    if text.first() == Some(&b'{') {
        return Ok(Data {
            json: serde_json::from_slice(text)?,
            attachments: Vec::new(),
        });
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(text)?;
    let mp = rmpv::decode::read_value(&mut raw.as_slice())?;
    let mut attachments = Vec::new();
    let json = from_msgpack(mp, &mut attachments);
    Ok(Data { json, attachments })
}

/// A stream entry's fields (`uid`, `nsp`, `type`, `data`) to a message.
pub fn parse_entry<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
) -> Result<Message, CodecError> {
    let (mut uid, mut nsp, mut kind, mut data) = (None, None, None, None);
    for (k, v) in fields {
        match k {
            b"uid" => uid = Some(String::from_utf8_lossy(v).into_owned()),
            b"nsp" => nsp = Some(String::from_utf8_lossy(v).into_owned()),
            b"type" => kind = Some(v),
            b"data" => data = Some(v),
            _ => {}
        }
    }
    let kind = std::str::from_utf8(kind.ok_or(CodecError::Missing("type"))?)
        .ok()
        .and_then(|t| t.parse::<u8>().ok())
        .ok_or(CodecError::Invalid("type"))?;
    Ok(Message {
        kind,
        uid: uid.unwrap_or_default(),
        nsp: nsp.ok_or(CodecError::Missing("nsp"))?,
        data: data.map(parse_entry_data).transpose()?,
    })
}

/// The msgpack PUB/SUB payload of a message: `{type, data, uid, nsp}`.
pub fn pubsub_payload(message: &Message) -> Vec<u8> {
    let mut map = vec![(Mp::from("type"), Mp::from(message.kind))];
    if let Some(d) = &message.data {
        map.push((Mp::from("data"), to_msgpack(&d.json, &d.attachments)));
    }
    map.push((Mp::from("uid"), Mp::from(message.uid.as_str())));
    map.push((Mp::from("nsp"), Mp::from(message.nsp.as_str())));
    msgpack_bytes(&Mp::Map(map))
}

/// Reads a PUB/SUB payload.
pub fn parse_pubsub(payload: &[u8]) -> Result<Message, CodecError> {
    let mp = rmpv::decode::read_value(&mut &payload[..])?;
    let Mp::Map(entries) = mp else {
        return Err(CodecError::Invalid("payload"));
    };
    let (mut kind, mut uid, mut nsp, mut data) = (None, None, None, None);
    for (k, v) in entries {
        match k.as_str() {
            Some("type") => kind = v.as_u64(),
            Some("uid") => uid = v.as_str().map(String::from),
            Some("nsp") => nsp = v.as_str().map(String::from),
            Some("data") => {
                let mut attachments = Vec::new();
                let json = from_msgpack(v, &mut attachments);
                data = Some(Data { json, attachments });
            }
            _ => {}
        }
    }
    Ok(Message {
        kind: kind
            .and_then(|k| u8::try_from(k).ok())
            .ok_or(CodecError::Missing("type"))?,
        uid: uid.unwrap_or_default(),
        nsp: nsp.ok_or(CodecError::Missing("nsp"))?,
        data,
    })
}

/// Node's `encodeOptions`: `{rooms, except, flags}` in Node's key order, false
/// flags left out.
pub fn options_text(opts: &BroadcastOptions) -> String {
    let list = |v: &[String]| serde_json::to_string(v).unwrap_or_else(|_| "[]".into());
    let mut flags = Vec::new();
    if opts.flags.volatile {
        flags.push("\"volatile\":true");
    }
    if opts.flags.local {
        flags.push("\"local\":true");
    }
    if !opts.flags.compress {
        flags.push("\"compress\":false");
    }
    format!(
        "{{\"rooms\":{},\"except\":{},\"flags\":{{{}}}}}",
        list(&opts.rooms),
        list(&opts.except),
        flags.join(",")
    )
}

/// [`options_text`] as a value.
pub fn options_json(opts: &BroadcastOptions) -> Value {
    serde_json::from_str(&options_text(opts)).unwrap_or(Value::Null)
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Node's `decodeOptions`; the result applies to this server only.
pub fn options_from(v: Option<&Value>) -> BroadcastOptions {
    let flags = v.and_then(|o| o.get("flags"));
    BroadcastOptions {
        rooms: strings(v.and_then(|o| o.get("rooms"))),
        except: strings(v.and_then(|o| o.get("except"))),
        flags: BroadcastFlags {
            local: true,
            volatile: flags
                .and_then(|f| f.get("volatile"))
                .is_some_and(|b| b.as_bool() == Some(true)),
            compress: flags
                .and_then(|f| f.get("compress"))
                .is_none_or(|b| b.as_bool() != Some(false)),
        },
    }
}

/// An rsio event frame taken apart: the JSON array text (`[event, …args]`,
/// placeholders included) and its attachments. Its ack id is dropped: each
/// server numbers the acks of its own clients.
pub struct EventParts<'a> {
    pub array: &'a str,
    pub attachments: Vec<Bytes>,
}

/// Reads `4<2|5n->[/nsp,][id][…]` (how rsio encodes an event) back.
pub fn event_parts(packet: &EncodedPacket) -> Option<EventParts<'_>> {
    let mut frames = packet.0.iter();
    let Some(Frame::Text(text)) = frames.next() else {
        return None;
    };
    let s = text.as_str().strip_prefix('4')?;
    let s = match s.as_bytes().first()? {
        b'2' => &s[1..],
        b'5' => &s[s.find('-')? + 1..],
        _ => return None,
    };
    let s = if s.starts_with('/') {
        &s[s.find(',')? + 1..]
    } else {
        s
    };
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let attachments = frames
        .filter_map(|f| match f {
            Frame::Binary(b) => Some(b.clone()),
            Frame::Text(_) => None,
        })
        .collect();
    Some(EventParts {
        array: &s[digits..],
        attachments,
    })
}

/// Node's unencoded packet `{type: 2, data: [event, …args]}` for an rsio frame.
pub fn node_packet(parts: &EventParts<'_>) -> Result<Value, CodecError> {
    let data: Value = serde_json::from_str(parts.array)?;
    Ok(serde_json::json!({"type": 2, "data": data}))
}

/// The stream `data` of a BROADCAST without ack, built from the frame's text;
/// JSON by concatenation when there is no binary, else base64 msgpack.
pub fn broadcast_entry_data(parts: &EventParts<'_>, opts: &BroadcastOptions) -> String {
    if parts.attachments.is_empty() {
        let opts = options_text(opts);
        let mut s = String::with_capacity(48 + parts.array.len());
        s.push_str("{\"packet\":{\"type\":2,\"data\":");
        s.push_str(parts.array);
        s.push_str("},\"opts\":");
        s.push_str(&opts);
        s.push('}');
        return s;
    }
    let opts = options_json(opts);
    let packet = node_packet(parts).unwrap_or(Value::Null);
    entry_data(
        kind::BROADCAST,
        &Data {
            json: serde_json::json!({"packet": packet, "opts": opts}),
            attachments: parts.attachments.clone(),
        },
    )
}

/// An rsio frame for Node's `packet` object: namespace `nsp`, ack id `ack`, and
/// `offset` appended to the arguments (connection state recovery).
pub fn encode_event(
    nsp: &str,
    packet: &Value,
    attachments: &[Bytes],
    ack: Option<u64>,
    offset: Option<&str>,
) -> Option<EncodedPacket> {
    let data = packet.get("data").filter(|d| d.is_array())?;
    encode_raw(nsp, &data.to_string(), attachments, ack, offset)
}

/// An rsio frame for the JSON text of a packet's `data` array (`[event, …]`).
pub fn encode_raw(
    nsp: &str,
    array: &str,
    attachments: &[Bytes],
    ack: Option<u64>,
    offset: Option<&str>,
) -> Option<EncodedPacket> {
    let array = array.trim();
    let inner = array.strip_prefix('[')?.strip_suffix(']')?;
    if inner.trim().is_empty() {
        return None;
    }
    let mut text = String::with_capacity(24 + nsp.len() + array.len());
    text.push('4');
    if attachments.is_empty() {
        text.push('2');
    } else {
        text.push('5');
        text.push_str(itoa::Buffer::new().format(attachments.len()));
        text.push('-');
    }
    if nsp != "/" {
        text.push_str(nsp);
        text.push(',');
    }
    if let Some(id) = ack {
        text.push_str(itoa::Buffer::new().format(id));
    }
    text.push('[');
    text.push_str(inner);
    if let Some(offset) = offset {
        // Entry ids are digits and a dash: no escaping needed.
        text.push_str(",\"");
        text.push_str(offset);
        text.push('"');
    }
    text.push(']');
    let frames: Vec<Frame> = std::iter::once(Frame::text(text))
        .chain(attachments.iter().cloned().map(Frame::Binary))
        .collect();
    Some(EncodedPacket(frames.into()))
}

/// A BROADCAST without ack as Node writes it to the stream (JSON), read without
/// building a tree: the packet's `data` array stays the entry's own text.
#[derive(serde::Deserialize)]
pub struct JsonBroadcast<'a> {
    #[serde(borrow)]
    packet: JsonPacket<'a>,
    #[serde(default)]
    opts: JsonOpts,
    #[serde(rename = "requestId", default)]
    request_id: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct JsonPacket<'a> {
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
    #[serde(default)]
    id: Option<u64>,
}

#[derive(serde::Deserialize, Default)]
struct JsonOpts {
    #[serde(default)]
    rooms: Vec<String>,
    #[serde(default)]
    except: Vec<String>,
    #[serde(default)]
    flags: JsonFlags,
}

#[derive(serde::Deserialize, Default)]
struct JsonFlags {
    #[serde(default)]
    volatile: Option<bool>,
    #[serde(default)]
    compress: Option<bool>,
}

impl<'a> JsonBroadcast<'a> {
    /// `None` when `data` is not such a broadcast (then the general path reads it).
    pub fn parse(data: &'a [u8]) -> Option<JsonBroadcast<'a>> {
        let b: JsonBroadcast<'a> = serde_json::from_slice(data).ok()?;
        b.request_id.is_none().then_some(b)
    }

    /// The packet's `[event, …args]` text.
    pub fn array(&self) -> &'a str {
        self.packet.data.get()
    }

    /// The packet's ack id (a recoverable `socket.emit` with an ack, from Node).
    pub fn ack(&self) -> Option<u64> {
        self.packet.id
    }

    /// The options, applying to this server only.
    pub fn options(self) -> BroadcastOptions {
        BroadcastOptions {
            rooms: self.opts.rooms,
            except: self.opts.except,
            flags: BroadcastFlags {
                local: true,
                volatile: self.opts.flags.volatile == Some(true),
                compress: self.opts.flags.compress != Some(false),
            },
        }
    }
}

/// A stream entry id (`<ms>-<seq>`) as one ordered number, for the recovery
/// horizon (`ms` fits in 42 bits until year 2109, `seq` is clamped to 22).
pub fn entry_order(id: &str) -> Option<u64> {
    let (ms, seq) = parse_entry_id(id)?;
    Some(order(ms, seq))
}

/// `<ms>-<seq>` as one ordered number (see [`entry_order`]).
pub fn order(ms: u64, seq: u64) -> u64 {
    ms << 22 | seq.min((1 << 22) - 1)
}

/// `<ms>-<seq>` (Node's `^[0-9]+-[0-9]+$`).
pub fn parse_entry_id(id: &str) -> Option<(u64, u64)> {
    let (ms, seq) = id.split_once('-')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(ms) || !digits(seq) {
        return None;
    }
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

mod route;
pub(crate) use route::msgpack_rooms;
pub use route::{entry_route, Route};

#[cfg(test)]
mod tests;
