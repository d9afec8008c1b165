//! The wire format of `@socket.io/redis-adapter` 8.3 (`lib/index.ts`):
//! broadcasts as msgpack (notepack.io) `[uid, packet, opts]`, requests and
//! responses as JSON, except a broadcast with acks and its acks (msgpack maps).
//! JSON is written in Node's key order, so the bytes match Node's.

use bytes::Bytes;
use rmpv::ValueRef as MpRef;
use serde_json::Value;

use super::super::codec::{from_msgpack, msgpack_rooms, CodecError, Data, EventParts, Route};
use crate::adapter::{BroadcastFlags, BroadcastOptions};

/// `RequestType` of the adapter.
pub(crate) mod request {
    pub const SOCKETS: u64 = 0;
    pub const ALL_ROOMS: u64 = 1;
    pub const REMOTE_JOIN: u64 = 2;
    pub const REMOTE_LEAVE: u64 = 3;
    pub const REMOTE_DISCONNECT: u64 = 4;
    pub const REMOTE_FETCH: u64 = 5;
    pub const SERVER_SIDE_EMIT: u64 = 6;
    pub const BROADCAST: u64 = 7;
    pub const BROADCAST_CLIENT_COUNT: u64 = 8;
    pub const BROADCAST_ACK: u64 = 9;
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

// Writing to a Vec cannot fail: the results of the rmp writers are ignored.

fn put_str(out: &mut Vec<u8>, s: &str) {
    let _ = rmp::encode::write_str(out, s);
}

fn put_strs(out: &mut Vec<u8>, list: &[String]) {
    let _ = rmp::encode::write_array_len(out, list.len() as u32);
    for s in list {
        put_str(out, s);
    }
}

/// A JSON value (placeholders into `attachments`) as notepack writes the same
/// JS value: the smallest forms, integral numbers as integers, binary inline.
fn put_json(out: &mut Vec<u8>, v: &Value, attachments: &[Bytes]) {
    match v {
        Value::Null => {
            let _ = rmp::encode::write_nil(out);
        }
        Value::Bool(b) => {
            let _ = rmp::encode::write_bool(out, *b);
        }
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                let _ = rmp::encode::write_uint(out, u);
            } else if let Some(i) = n.as_i64() {
                let _ = rmp::encode::write_sint(out, i);
            } else {
                let f = n.as_f64().unwrap_or_default();
                if f.fract() == 0.0 && f.abs() < 9.2e18 {
                    let _ = rmp::encode::write_sint(out, f as i64);
                } else {
                    let _ = rmp::encode::write_f64(out, f);
                }
            }
        }
        Value::String(s) => put_str(out, s),
        Value::Array(a) => {
            let _ = rmp::encode::write_array_len(out, a.len() as u32);
            for item in a {
                put_json(out, item, attachments);
            }
        }
        Value::Object(map) => {
            let placeholder = map.len() == 2 && map.get("_placeholder") == Some(&Value::Bool(true));
            let bytes = map
                .get("num")
                .and_then(Value::as_u64)
                .and_then(|n| attachments.get(n as usize))
                .filter(|_| placeholder);
            if let Some(b) = bytes {
                let _ = rmp::encode::write_bin(out, b);
                return;
            }
            let _ = rmp::encode::write_map_len(out, map.len() as u32);
            for (k, v) in map {
                put_str(out, k);
                put_json(out, v, attachments);
            }
        }
    }
}

/// `{rooms, except, flags}`: `flags` holds what Node's broadcast operator sets
/// (`volatile`, `compress: false`); `local` broadcasts are never published.
fn put_options(out: &mut Vec<u8>, opts: &BroadcastOptions) {
    let _ = rmp::encode::write_map_len(out, 3);
    put_str(out, "rooms");
    put_strs(out, &opts.rooms);
    put_str(out, "except");
    put_strs(out, &opts.except);
    put_str(out, "flags");
    let len = u32::from(opts.flags.volatile) + u32::from(!opts.flags.compress);
    let _ = rmp::encode::write_map_len(out, len);
    if opts.flags.volatile {
        put_str(out, "volatile");
        let _ = rmp::encode::write_bool(out, true);
    }
    if !opts.flags.compress {
        put_str(out, "compress");
        let _ = rmp::encode::write_bool(out, false);
    }
}

/// Node's packet object `{type: 2, data: [event, …args], nsp}`, binary inline.
fn put_packet(out: &mut Vec<u8>, nsp: &str, parts: &EventParts<'_>) -> Result<(), CodecError> {
    let data: Value = serde_json::from_str(parts.array)?;
    let _ = rmp::encode::write_map_len(out, 3);
    put_str(out, "type");
    let _ = rmp::encode::write_uint(out, 2);
    put_str(out, "data");
    put_json(out, &data, &parts.attachments);
    put_str(out, "nsp");
    put_str(out, nsp);
    Ok(())
}

/// Room for a message around a packet's data.
fn capacity(parts: &EventParts<'_>) -> usize {
    64 + parts.array.len() + parts.attachments.iter().map(Bytes::len).sum::<usize>()
}

/// The channel of a broadcast: `<key>#<nsp>#`, plus `<room>#` when it targets
/// exactly one room.
pub fn broadcast_channel(base: &str, opts: &BroadcastOptions) -> String {
    match opts.rooms.as_slice() {
        [room] => format!("{base}{room}#"),
        _ => base.to_string(),
    }
}

/// A broadcast: msgpack `[uid, packet, opts]`.
pub fn broadcast_message(
    uid: &str,
    nsp: &str,
    parts: &EventParts<'_>,
    opts: &BroadcastOptions,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(capacity(parts));
    let _ = rmp::encode::write_array_len(&mut out, 3);
    put_str(&mut out, uid);
    put_packet(&mut out, nsp, parts)?;
    put_options(&mut out, opts);
    Ok(out)
}

/// A broadcast with acks: msgpack `{uid, requestId, type: 7, packet, opts}`.
pub fn broadcast_request(
    uid: &str,
    request_id: &str,
    nsp: &str,
    parts: &EventParts<'_>,
    opts: &BroadcastOptions,
) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(capacity(parts));
    let _ = rmp::encode::write_map_len(&mut out, 5);
    put_str(&mut out, "uid");
    put_str(&mut out, uid);
    put_str(&mut out, "requestId");
    put_str(&mut out, request_id);
    put_str(&mut out, "type");
    let _ = rmp::encode::write_uint(&mut out, request::BROADCAST);
    put_str(&mut out, "packet");
    put_packet(&mut out, nsp, parts)?;
    put_str(&mut out, "opts");
    put_options(&mut out, opts);
    Ok(out)
}

/// A broadcast received: who sent it, its packet's namespace and `data` array
/// (JSON text, placeholders into `attachments`), and its options (for this
/// server only).
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    pub uid: String,
    pub nsp: String,
    pub data: String,
    pub attachments: Vec<Bytes>,
    pub opts: BroadcastOptions,
}

/// Whether `payload` is a broadcast sent by `uid` (checked on its first bytes,
/// so this server's own broadcasts are dropped without decoding them).
pub fn is_from(payload: &[u8], uid: &str) -> bool {
    let n = uid.len();
    n < 32
        && payload.len() > 2 + n
        && payload[0] == 0x93
        && payload[1] == 0xa0 | n as u8
        && &payload[2..2 + n] == uid.as_bytes()
}

fn write_number(out: &mut Vec<u8>, f: f64) {
    // JSON.stringify: integral numbers without a fraction, NaN and infinities as null.
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        out.extend_from_slice(itoa::Buffer::new().format(f as i64).as_bytes());
    } else {
        let _ = serde_json::to_writer(&mut *out, &f);
    }
}

/// Writes a msgpack value as the JSON text rsio's frames carry: `bin` as a
/// placeholder numbered into `attachments`, a timestamp as its ISO string.
fn write_json(v: &MpRef<'_>, out: &mut Vec<u8>, attachments: &mut Vec<Bytes>) {
    match v {
        MpRef::Nil => out.extend_from_slice(b"null"),
        MpRef::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        MpRef::Integer(i) => match (i.as_u64(), i.as_i64()) {
            (Some(u), _) => out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes()),
            (None, Some(s)) => out.extend_from_slice(itoa::Buffer::new().format(s).as_bytes()),
            _ => out.extend_from_slice(b"null"),
        },
        MpRef::F32(f) => write_number(out, f64::from(*f)),
        MpRef::F64(f) => write_number(out, *f),
        MpRef::String(s) => {
            let _ = serde_json::to_writer(&mut *out, s.as_str().unwrap_or_default());
        }
        MpRef::Binary(b) => {
            out.extend_from_slice(b"{\"_placeholder\":true,\"num\":");
            out.extend_from_slice(itoa::Buffer::new().format(attachments.len()).as_bytes());
            out.push(b'}');
            attachments.push(Bytes::copy_from_slice(b));
        }
        MpRef::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, out, attachments);
            }
            out.push(b']');
        }
        MpRef::Map(entries) => {
            out.push(b'{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let key = match k {
                    MpRef::String(s) => s.as_str().unwrap_or_default().to_string(),
                    other => other.to_owned().to_string(),
                };
                let _ = serde_json::to_writer(&mut *out, &key);
                out.push(b':');
                write_json(v, out, attachments);
            }
            out.push(b'}');
        }
        MpRef::Ext(-1, bytes) => match super::super::codec::timestamp(bytes) {
            Some(t) => {
                let _ = serde_json::to_writer(&mut *out, &t);
            }
            None => out.extend_from_slice(b"null"),
        },
        MpRef::Ext(..) => out.extend_from_slice(b"null"),
    }
}

fn map_get<'v, 'a>(map: &'v [(MpRef<'a>, MpRef<'a>)], key: &str) -> Option<&'v MpRef<'a>> {
    map.iter()
        .find(|(k, _)| matches!(k, MpRef::String(s) if s.as_str() == Some(key)))
        .map(|(_, v)| v)
}

/// Reads a broadcast `[uid, packet, opts]` without building trees of owned
/// values: the packet's `data` goes straight to JSON text. A packet without
/// `nsp` is for `/`.
pub fn parse_broadcast(payload: &[u8]) -> Result<Broadcast, CodecError> {
    let mp = rmpv::decode::read_value_ref(&mut &payload[..])?;
    let MpRef::Array(items) = mp else {
        return Err(CodecError::Invalid("broadcast"));
    };
    let (Some(uid), Some(MpRef::Map(packet))) = (items.first(), items.get(1)) else {
        return Err(CodecError::Invalid("broadcast"));
    };
    let uid = match uid {
        MpRef::String(s) => s.as_str().unwrap_or_default().to_string(),
        _ => String::new(),
    };
    let nsp = match map_get(packet, "nsp") {
        Some(MpRef::String(s)) => s.as_str().ok_or(CodecError::Invalid("nsp"))?.to_string(),
        None | Some(MpRef::Nil) => "/".to_string(),
        Some(_) => return Err(CodecError::Invalid("nsp")),
    };
    let Some(data @ MpRef::Array(_)) = map_get(packet, "data") else {
        return Err(CodecError::Missing("data"));
    };
    let mut text = Vec::with_capacity(payload.len());
    let mut attachments = Vec::new();
    write_json(data, &mut text, &mut attachments);
    let opts = items
        .get(2)
        .map(|o| from_msgpack(o.to_owned(), &mut Vec::new()));
    Ok(Broadcast {
        uid,
        nsp,
        // Only JSON was written, and JSON text of UTF-8 strings is UTF-8.
        data: String::from_utf8(text).map_err(|_| CodecError::Invalid("data"))?,
        attachments,
        opts: options_from(opts.as_ref()),
    })
}

/// The route of a message of `channel` (see [`Route`]): a broadcast
/// ([`broadcast_route`]), a join request (`REMOTE_JOIN`), or anything else.
pub fn message_route(channel: &str, payload: &[u8]) -> Route {
    if payload.first() == Some(&0x93) {
        return broadcast_route(payload);
    }
    join_route(channel, payload).unwrap_or(Route::Everyone)
}

/// A `REMOTE_JOIN` request on `<key>-request#<nsp>#`: its namespace and rooms
/// (`rooms`, or the older per-socket form's `room`).
fn join_route(channel: &str, payload: &[u8]) -> Option<Route> {
    let (_, nsp) = channel.strip_suffix('#')?.split_once("-request#")?;
    let data = parse_json_or_msgpack(payload).ok()?;
    if data.json.get("type").and_then(Value::as_u64) != Some(request::REMOTE_JOIN) {
        return None;
    }
    let mut rooms = strings(data.json.get("rooms"));
    if let Some(room) = data.json.get("room").and_then(Value::as_str) {
        rooms.push(room.to_string());
    }
    Some(Route::Join {
        nsp: nsp.to_string(),
        rooms,
    })
}

/// The route of a message of a broadcast channel, `[uid, packet, opts]`,
/// reading only the packet's namespace and the options' rooms (see
/// [`Route`]); anything else (a request or an answer, a map) goes everywhere.
/// Broadcasts with acks are requests: they are never such an array.
pub fn broadcast_route(payload: &[u8]) -> Route {
    let Ok(MpRef::Array(items)) = rmpv::decode::read_value_ref(&mut &payload[..]) else {
        return Route::Everyone;
    };
    let (Some(MpRef::Map(packet)), Some(opts)) = (items.get(1), items.get(2)) else {
        return Route::Everyone;
    };
    let nsp = match map_get(packet, "nsp") {
        Some(MpRef::String(s)) => match s.as_str() {
            Some(nsp) => nsp,
            None => return Route::Everyone,
        },
        None | Some(MpRef::Nil) => "/",
        Some(_) => return Route::Everyone,
    };
    match msgpack_rooms(opts) {
        Some(rooms) if !rooms.is_empty() => Route::Rooms {
            nsp: nsp.to_string(),
            rooms,
        },
        _ => Route::Everyone,
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| match s {
                    Value::String(s) => Some(s.clone()),
                    // Node's rooms may be numbers; rsio's are strings.
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Options received (`{rooms, except, flags}`), applying to this server only.
pub fn options_from(v: Option<&Value>) -> BroadcastOptions {
    let flag = |name| {
        v.and_then(|o| o.get("flags"))
            .and_then(|f| f.get(name))
            .and_then(Value::as_bool)
    };
    let volatile = flag("volatile") == Some(true);
    let compress = flag("compress") != Some(false);
    BroadcastOptions {
        rooms: strings(v.and_then(|o| o.get("rooms"))),
        except: strings(v.and_then(|o| o.get("except"))),
        flags: BroadcastFlags {
            local: true,
            volatile,
            compress,
        },
    }
}

/// A request or response: JSON when it starts with `{`, else msgpack.
pub fn parse_json_or_msgpack(payload: &[u8]) -> Result<Data, CodecError> {
    if payload.first() == Some(&b'{') {
        return Ok(Data {
            json: serde_json::from_slice(payload)?,
            attachments: Vec::new(),
        });
    }
    let mp = rmpv::decode::read_value(&mut &payload[..])?;
    let mut attachments = Vec::new();
    let json = from_msgpack(mp, &mut attachments);
    if !json.is_object() {
        return Err(CodecError::Invalid("request"));
    }
    Ok(Data { json, attachments })
}

/// `{"rooms":[…],"except":[…]}`, as Node's requests carry options.
fn opts_json(opts: &BroadcastOptions) -> String {
    format!(
        "{{\"rooms\":{},\"except\":{}}}",
        json_list(&opts.rooms),
        json_list(&opts.except)
    )
}

/// `REMOTE_JOIN` / `REMOTE_LEAVE`: `{"uid","type","opts","rooms"}`.
pub fn rooms_request(uid: &str, kind: u64, opts: &BroadcastOptions, rooms: &[String]) -> String {
    format!(
        "{{\"uid\":{},\"type\":{kind},\"opts\":{},\"rooms\":{}}}",
        json_str(uid),
        opts_json(opts),
        json_list(rooms)
    )
}

/// `REMOTE_DISCONNECT`: `{"uid","type","opts","close"}`.
pub fn disconnect_request(uid: &str, opts: &BroadcastOptions, close: bool) -> String {
    format!(
        "{{\"uid\":{},\"type\":{},\"opts\":{},\"close\":{close}}}",
        json_str(uid),
        request::REMOTE_DISCONNECT,
        opts_json(opts)
    )
}

/// `REMOTE_FETCH`: `{"uid","requestId","type","opts"}`.
pub fn fetch_request(uid: &str, request_id: &str, opts: &BroadcastOptions) -> String {
    format!(
        "{{\"uid\":{},\"requestId\":{},\"type\":{},\"opts\":{}}}",
        json_str(uid),
        json_str(request_id),
        request::REMOTE_FETCH,
        opts_json(opts)
    )
}

/// `SERVER_SIDE_EMIT`: `{"uid",["requestId",]"type","data"}`; `data` is the
/// JSON text of `[event, …args]`.
pub fn server_side_request(uid: &str, request_id: Option<&str>, data: &str) -> String {
    let request = request_id
        .map(|r| format!("\"requestId\":{},", json_str(r)))
        .unwrap_or_default();
    format!(
        "{{\"uid\":{},{request}\"type\":{},\"data\":{data}}}",
        json_str(uid),
        request::SERVER_SIDE_EMIT
    )
}

/// The answer to a `SERVER_SIDE_EMIT` with ack: `{"type","requestId","data"}`.
pub fn server_side_response(request_id: &str, data: &Value) -> String {
    format!(
        "{{\"type\":{},\"requestId\":{},\"data\":{data}}}",
        request::SERVER_SIDE_EMIT,
        json_str(request_id)
    )
}

/// `BROADCAST_CLIENT_COUNT`: `{"type","requestId","clientCount"}`.
pub fn client_count_response(request_id: &str, count: usize) -> String {
    format!(
        "{{\"type\":{},\"requestId\":{},\"clientCount\":{count}}}",
        request::BROADCAST_CLIENT_COUNT,
        json_str(request_id)
    )
}

/// `BROADCAST_ACK`: msgpack `{type, requestId, packet}`, binary inline.
pub fn ack_response(request_id: &str, arg: &Data) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    let _ = rmp::encode::write_map_len(&mut out, 3);
    put_str(&mut out, "type");
    let _ = rmp::encode::write_uint(&mut out, request::BROADCAST_ACK);
    put_str(&mut out, "requestId");
    put_str(&mut out, request_id);
    put_str(&mut out, "packet");
    put_json(&mut out, &arg.json, &arg.attachments);
    out
}

/// JSON with rsio's binary placeholders replaced as `JSON.stringify` writes a
/// Node `Buffer` (`{"type":"Buffer","data":[…]}`): the classic adapter sends
/// server-side emits and their answers as JSON.
pub fn buffers_as_json(v: &Value, attachments: &[Bytes]) -> Value {
    match v {
        Value::Array(a) => {
            Value::Array(a.iter().map(|v| buffers_as_json(v, attachments)).collect())
        }
        Value::Object(m) => {
            let placeholder = m.len() == 2 && m.get("_placeholder") == Some(&Value::Bool(true));
            let bytes = m
                .get("num")
                .and_then(Value::as_u64)
                .and_then(|n| attachments.get(n as usize))
                .filter(|_| placeholder);
            if let Some(b) = bytes {
                return serde_json::json!({"type": "Buffer", "data": b.as_ref()});
            }
            Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), buffers_as_json(v, attachments)))
                    .collect(),
            )
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests;
