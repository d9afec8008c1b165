//! The routing view of what a host's primary reads on Redis: a broadcast's
//! namespace and rooms, read without building its packet, so that the
//! primary forwards it only to the workers with members (see
//! `cluster::redis_host`).

use base64::Engine as _;
use bytes::Bytes;

use super::{parse_entry, strings, Message};

/// Where a broadcast read on Redis must go, as much as a host's primary needs
/// to know to route it to its workers (see `cluster::redis_host`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Every server: not a broadcast to named rooms (to every socket, with
    /// acks, a request, an answer, another type, or unreadable).
    Everyone,
    /// A broadcast without acks to the members of `rooms` (never empty) of `nsp`.
    Rooms {
        /// The namespace.
        nsp: String,
        /// The target rooms, as written (a room may be shaped like a socket id).
        rooms: Vec<String>,
    },
    /// A join of sockets to `rooms` of `nsp` (`socketsJoin`): every server.
    /// A host's worker applies it after its primary read it, maybe after the
    /// primary read a broadcast to these rooms that came after it: from then
    /// on, such broadcasts go everywhere.
    Join {
        /// The namespace.
        nsp: String,
        /// The rooms joined.
        rooms: Vec<String>,
    },
}

impl Route {
    fn rooms(nsp: &str, rooms: Vec<String>) -> Route {
        match rooms.is_empty() {
            true => Route::Everyone,
            false => Route::Rooms {
                nsp: nsp.to_string(),
                rooms,
            },
        }
    }
}

/// The routing view of a BROADCAST's JSON `data`: its rooms, and whether it
/// asks for acks; the packet is skipped, not built.
#[derive(serde::Deserialize)]
struct JsonRoute<'a> {
    #[serde(borrow, default)]
    opts: Option<JsonRouteOpts<'a>>,
    #[serde(rename = "requestId", default)]
    request_id: Option<serde::de::IgnoredAny>,
}

#[derive(serde::Deserialize)]
struct JsonRouteOpts<'a> {
    #[serde(borrow, default)]
    rooms: Vec<std::borrow::Cow<'a, str>>,
}

/// The rooms of msgpack broadcast options `{rooms: [...], …}`; `None` when a
/// room is not a string (Node's rooms may be numbers: the caller then sends
/// it everywhere).
pub(crate) fn msgpack_rooms(opts: &rmpv::ValueRef<'_>) -> Option<Vec<String>> {
    use rmpv::ValueRef as R;
    let R::Map(entries) = opts else {
        return Some(Vec::new());
    };
    let rooms = entries
        .iter()
        .find(|(k, _)| matches!(k, R::String(s) if s.as_str() == Some("rooms")))
        .map(|(_, v)| v);
    match rooms {
        None | Some(R::Nil) => Some(Vec::new()),
        Some(R::Array(items)) => items
            .iter()
            .map(|r| match r {
                R::String(s) => s.as_str().map(String::from),
                _ => None,
            })
            .collect(),
        Some(_) => None,
    }
}

/// The route of a stream entry (`fields`: names and values, alternating),
/// reading only its type, namespace and options: a BROADCAST without
/// `requestId` to named rooms goes to their members, anything else everywhere.
pub fn entry_route(fields: &[Bytes]) -> Route {
    let field = |name: &[u8]| {
        fields
            .chunks_exact(2)
            .find(|kv| kv[0] == name)
            .map(|kv| &kv[1][..])
    };
    if field(b"type") == Some(b"4") {
        return join_route(fields);
    }
    let (Some(b"3"), Some(nsp), Some(data)) = (field(b"type"), field(b"nsp"), field(b"data"))
    else {
        return Route::Everyone;
    };
    let Ok(nsp) = std::str::from_utf8(nsp) else {
        return Route::Everyone;
    };
    if data.first() == Some(&b'{') {
        return match serde_json::from_slice::<JsonRoute<'_>>(data) {
            Ok(JsonRoute {
                opts: Some(opts),
                request_id: None,
            }) => Route::rooms(nsp, opts.rooms.into_iter().map(String::from).collect()),
            _ => Route::Everyone,
        };
    }
    // Binary: base64 msgpack of `{packet, opts, requestId?}`.
    let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(data) else {
        return Route::Everyone;
    };
    let Ok(rmpv::ValueRef::Map(entries)) = rmpv::decode::read_value_ref(&mut raw.as_slice()) else {
        return Route::Everyone;
    };
    let key = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| matches!(k, rmpv::ValueRef::String(s) if s.as_str() == Some(name)))
            .map(|(_, v)| v)
    };
    if key("requestId").is_some_and(|v| !matches!(v, rmpv::ValueRef::Nil)) {
        return Route::Everyone;
    }
    match key("opts").map(msgpack_rooms) {
        Some(Some(rooms)) => Route::rooms(nsp, rooms),
        _ => Route::Everyone,
    }
}

/// The route of a SOCKETS_JOIN entry (rare: read in full).
fn join_route(fields: &[Bytes]) -> Route {
    let pairs = fields
        .chunks_exact(2)
        .map(|kv| (kv[0].as_ref(), kv[1].as_ref()));
    match parse_entry(pairs) {
        Ok(Message {
            nsp,
            data: Some(data),
            ..
        }) => Route::Join {
            rooms: strings(data.json.get("rooms")),
            nsp,
        },
        _ => Route::Everyone,
    }
}
