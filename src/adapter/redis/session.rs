//! Connection state recovery across servers, as Node's adapter does it: the
//! session under `<sessionKeyPrefix><pid>` (base64 msgpack, expiring after the
//! maximum disconnection duration), the missed packets read back from the stream.

use std::sync::Arc;

use base64::Engine as _;
use rmpv::Value as Mp;
use serde_json::Value;
use tracing::debug;

use super::{
    codec::{self, kind},
    conn, NsState, RedisStreams,
};
use crate::{
    adapter::{PersistedSession, Restored, RoomHold},
    engine::Sid,
};

/// Most `XRANGE` pages read for one restore (Node: 100 calls).
const MAX_PAGES: usize = 100;
/// Entries per page.
const PAGE: usize = 1000;

/// `SET <prefix><pid> base64(msgpack({sid, pid, rooms, data})) PX <max>`, fire
/// and forget; `rooms` includes the socket's own id room, as Node's does.
pub(super) fn persist(node: &RedisStreams, session: &PersistedSession) {
    let Some(recovery) = node.recovery.get() else {
        return;
    };
    let mut rooms = vec![Mp::from(session.id.as_str())];
    rooms.extend(session.rooms.iter().map(|r| Mp::from(r.as_str())));
    let value = Mp::Map(vec![
        (Mp::from("sid"), Mp::from(session.id.as_str())),
        (Mp::from("pid"), Mp::from(session.pid.as_str())),
        (Mp::from("rooms"), Mp::Array(rooms)),
        (Mp::from("data"), codec::to_msgpack(&session.data, &[])),
    ]);
    let mut bytes = Vec::new();
    let _ = rmpv::encode::write_value(&mut bytes, &value);
    let mut cmd = redis::cmd("SET");
    cmd.arg(format!("{}{}", node.config.session_key_prefix, session.pid))
        .arg(base64::engine::general_purpose::STANDARD.encode(bytes))
        .arg("PX")
        .arg(recovery.max_disconnection_duration.as_millis() as u64);
    node.send(cmd, None);
}

/// Reads a stored session; `None` if it is not one.
pub(super) fn parse_session(text: &[u8]) -> Option<PersistedSession> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    let mp = rmpv::decode::read_value(&mut raw.as_slice()).ok()?;
    let json = codec::from_msgpack(mp, &mut Vec::new());
    let id = Sid::parse(json.get("sid")?.as_str()?)?;
    let pid = Sid::parse(json.get("pid")?.as_str()?)?;
    let rooms = json
        .get("rooms")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .filter(|r| *r != id.as_str())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Some(PersistedSession {
        id,
        pid,
        rooms,
        data: json.get("data").cloned().unwrap_or(Value::Null),
    })
}

/// The session of `pid` (taken: restored once) and the broadcasts of its
/// namespace after `offset` that reach its rooms; `None` if either the session
/// or the offset is gone.
pub(super) async fn restore(
    node: &RedisStreams,
    ns: &NsState,
    pid: &str,
    offset: &str,
) -> Option<Restored> {
    let (mut ms, mut seq) = codec::parse_entry_id(offset)?;
    let mut c = node.link.conn().await.ok()?;
    let key = format!("{}{pid}", node.config.session_key_prefix);
    // MULTI GET DEL EXEC (not GETDEL: Redis < 6.2).
    let taken: redis::RedisResult<(Option<Vec<u8>>, i64)> = redis::pipe()
        .atomic()
        .get(&key)
        .del(&key)
        .query_async(&mut c)
        .await;
    let Ok((Some(raw), _)) = taken else {
        debug!(target: "socket.io:redis", pid, "session not restored: redis error or no session");
        return None;
    };
    let session = parse_session(&raw)?;
    // With `--redis`, the host's primary forwards a room broadcast only to
    // the workers whose bit is set for its rooms, and this worker may have
    // no member of the session's rooms yet. The bits are set here, before
    // the first XRANGE below is written; the primary routes an entry only
    // after its XREAD returned it, so after Redis appended it. An entry
    // appended before Redis ran the last XRANGE is in what they return (up
    // to `horizon`). One appended after is read by the primary after the
    // bits were set, and forwarded here: before the socket joined its rooms
    // it is kept in `recent` and replayed by `missed_after` (later than
    // `horizon`), after it is delivered live. One both returned and
    // forwarded (appended after the bits, before the last XRANGE) reaches
    // the socket once: live, it is skipped for it up to `horizon`
    // (`Replay::replayed`). The hold ends once the socket joined its rooms,
    // whose own count then keeps the bits, or with the restore (dropped on
    // any failure below or later).
    let hold = node
        .interest
        .get()
        .and_then(|make| make(&ns.nsp))
        .map(|sink| Arc::new(RoomHold::new(sink, &session.rooms)));
    let at_offset: redis::RedisResult<redis::Value> = redis::cmd("XRANGE")
        .arg(&ns.stream)
        .arg(offset)
        .arg(offset)
        .query_async(&mut c)
        .await;
    let Ok(at_offset) = at_offset else {
        debug!(target: "socket.io:redis", pid, "session not restored: redis error");
        return None;
    };
    if conn::entries(&at_offset).is_empty() {
        debug!(target: "socket.io:redis", pid, offset, "session not restored: offset not found");
        return None;
    }
    let mut rooms = session.rooms.clone();
    rooms.push(session.id.to_string());
    let mut missed = Vec::new();
    for _ in 0..MAX_PAGES {
        let page: redis::Value = redis::cmd("XRANGE")
            .arg(&ns.stream)
            .arg(format!("{ms}-{}", seq + 1))
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut c)
            .await
            .ok()?;
        let entries = conn::entries(&page);
        if entries.is_empty() {
            break;
        }
        for (id, fields) in entries {
            if let Some(next) = codec::parse_entry_id(&id) {
                (ms, seq) = next;
            }
            let Ok(msg) = codec::parse_entry(fields) else {
                continue;
            };
            if msg.nsp != ns.nsp || msg.kind != kind::BROADCAST {
                continue;
            }
            let Some(data) = msg.data else { continue };
            let Some(packet) = data.json.get("packet") else {
                continue;
            };
            let opts = codec::options_from(data.json.get("opts"));
            // Unlike Node, volatile packets and packets awaiting an ack (whose
            // id would be stale) are not replayed.
            if opts.flags.volatile
                || packet.get("id").is_some()
                || !crate::adapter::reaches(&opts.rooms, &opts.except, &rooms)
            {
                continue;
            }
            if let Some(p) =
                codec::encode_event(&ns.nsp, packet, &data.attachments, None, Some(&id))
            {
                missed.push(p);
            }
        }
    }
    let horizon = codec::order(ms, seq);
    ns.replay().replayed(session.id, horizon);
    Some(Restored {
        session,
        missed,
        horizon: Some(horizon),
        hold,
    })
}
