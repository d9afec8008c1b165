//! The in-memory adapter: this process's rooms index and, with connection state
//! recovery, its session store and packet log.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, MutexGuard, RwLock},
};

pub(crate) use super::interest::{InterestSink, RoomPresence};
use super::{
    interest::tracked,
    recovery::{PersistedSession, RecoveryConfig, RecoveryLog},
    Adapter, BroadcastOptions, EncodedPacket, Restored, RoomEvent, RoomListener, SocketId,
};

/// Socket ids are random and made by the server, so they are hashed with the
/// fast foldhash; room names may come from clients and keep the keyed SipHash.
type IdHasher = foldhash::fast::RandomState;

/// Rooms and their members.
///
/// A socket's own room (named by its id, which every socket joins first) is
/// not stored as a room: it is the `own` flag of the socket's entry. That room
/// has one member for its whole life, and storing it cost a few hundred bytes
/// per connection (two copies of the name, a member set, a map entry).
#[derive(Debug, Default)]
struct RoomIndex {
    /// Rooms other than the sockets' own (a room named like another socket's
    /// id, which a socket may join, is an ordinary room here).
    rooms: HashMap<String, HashSet<SocketId, IdHasher>>,
    sids: HashMap<SocketId, Joined, IdHasher>,
}

#[derive(Debug, Default)]
struct Joined {
    /// Whether the socket is in its own room (it may leave it).
    own: bool,
    /// Its other rooms in the order it joined them (Node's `socket.rooms` is an
    /// ordered Set, the own room first).
    rooms: Vec<String>,
}

impl RoomIndex {
    /// The socket whose own room is `room`, if it is in it.
    fn own_room_member(&self, room_id: Option<SocketId>) -> Option<SocketId> {
        room_id.filter(|id| self.sids.get(id).is_some_and(|j| j.own))
    }
}

/// Whether `room` names the own room of `id`.
fn is_own_room(room: &str, id: SocketId) -> bool {
    SocketId::parse(room) == Some(id)
}

/// The default adapter: everything stays in this process.
#[derive(Default)]
pub struct LocalAdapter {
    index: Mutex<RoomIndex>,
    recovery: Option<Mutex<RecoveryLog>>,
    listeners: RwLock<Vec<RoomListener>>,
    interest: Option<InterestSink>,
}

impl std::fmt::Debug for LocalAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAdapter").finish_non_exhaustive()
    }
}

impl LocalAdapter {
    /// An adapter for one server; with `recovery`, it keeps what reconnecting sockets missed.
    pub fn new(recovery: Option<RecoveryConfig>) -> LocalAdapter {
        LocalAdapter {
            index: Mutex::default(),
            recovery: recovery.map(|c| Mutex::new(RecoveryLog::new(c))),
            listeners: RwLock::default(),
            interest: None,
        }
    }

    /// An adapter that tells `sink` when a room appears or disappears here.
    pub(crate) fn with_interest(sink: InterestSink) -> LocalAdapter {
        LocalAdapter {
            interest: Some(sink),
            ..LocalAdapter::new(None)
        }
    }

    /// Tells the interest sink, for each of `rooms`, whether it has members
    /// here now (after a restore that may or may not have joined them).
    pub(crate) fn report_presence(&self, rooms: &[String]) {
        let Some(sink) = &self.interest else {
            return;
        };
        let index = self.index();
        for room in rooms.iter().filter(|r| tracked(r)) {
            sink(
                room,
                RoomPresence::Confirmed(index.rooms.contains_key(room)),
            );
        }
    }

    /// Reports a room that appeared (`true`) or disappeared; called with the
    /// index locked, so reports keep the order of the changes.
    fn interest(&self, room: &str, present: bool) {
        if let Some(sink) = self.interest.as_ref().filter(|_| tracked(room)) {
            sink(
                room,
                match present {
                    true => RoomPresence::Appeared,
                    false => RoomPresence::Gone,
                },
            );
        }
    }

    /// Runs the room listeners, after the index lock is released.
    fn emit(&self, events: Vec<RoomEvent>) {
        if events.is_empty() {
            return;
        }
        let listeners = self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        for event in &events {
            for listener in &listeners {
                // Application code: a panic in it must not stop the caller's bookkeeping.
                let call = std::panic::AssertUnwindSafe(|| listener(event));
                if let Err(payload) = std::panic::catch_unwind(call) {
                    let message = payload
                        .downcast_ref::<&str>()
                        .copied()
                        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                        .unwrap_or("(not a string)");
                    tracing::error!(target: "socket.io:adapter", ?event, panic = message, "a room listener panicked");
                }
            }
        }
    }

    fn watched(&self) -> bool {
        !self
            .listeners
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    fn index(&self) -> MutexGuard<'_, RoomIndex> {
        self.index.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn log(&self) -> Option<MutexGuard<'_, RecoveryLog>> {
        self.recovery
            .as_ref()
            .map(|m| m.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

impl Adapter for LocalAdapter {
    fn add_all(&self, id: SocketId, rooms: &[String]) {
        let watched = self.watched();
        let mut events = Vec::new();
        {
            let mut index = self.index();
            for room in rooms {
                if is_own_room(room, id) {
                    let others = index.rooms.contains_key(room);
                    let joined = index.sids.entry(id).or_default();
                    if !joined.own {
                        joined.own = true;
                        if watched {
                            if !others {
                                events.push(RoomEvent::Create(room.clone()));
                            }
                            events.push(RoomEvent::Join(room.clone(), id));
                        }
                    }
                    continue;
                }
                let owner = index.own_room_member(SocketId::parse(room));
                let joined = index.sids.entry(id).or_default();
                if !joined.rooms.contains(room) {
                    joined.rooms.push(room.clone());
                }
                let members = index.rooms.entry(room.clone()).or_default();
                if members.is_empty() {
                    if watched && owner.is_none() {
                        events.push(RoomEvent::Create(room.clone()));
                    }
                    self.interest(room, true);
                }
                if members.insert(id) && watched {
                    events.push(RoomEvent::Join(room.clone(), id));
                }
            }
        }
        self.emit(events);
    }

    fn del(&self, id: SocketId, room: &str) {
        let watched = self.watched();
        let mut events = Vec::new();
        {
            let mut index = self.index();
            if is_own_room(room, id) {
                let others = index.rooms.contains_key(room);
                if let Some(joined) = index.sids.get_mut(&id) {
                    if std::mem::take(&mut joined.own) && watched {
                        events.push(RoomEvent::Leave(room.to_string(), id));
                        if !others {
                            events.push(RoomEvent::Delete(room.to_string()));
                        }
                    }
                }
            } else {
                let owner = index.own_room_member(SocketId::parse(room));
                if let Some(joined) = index.sids.get_mut(&id) {
                    joined.rooms.retain(|r| r != room);
                }
                if let Some(members) = index.rooms.get_mut(room) {
                    if members.remove(&id) && watched {
                        events.push(RoomEvent::Leave(room.to_string(), id));
                    }
                    if members.is_empty() {
                        index.rooms.remove(room);
                        self.interest(room, false);
                        if watched && owner.is_none() {
                            events.push(RoomEvent::Delete(room.to_string()));
                        }
                    }
                }
            }
        }
        self.emit(events);
    }

    fn del_all(&self, id: SocketId) {
        let watched = self.watched();
        let mut events = Vec::new();
        {
            let mut index = self.index();
            let Some(joined) = index.sids.remove(&id) else {
                return;
            };
            if joined.own && watched {
                let own = id.to_string();
                let others = index.rooms.contains_key(&own);
                events.push(RoomEvent::Leave(own.clone(), id));
                if !others {
                    events.push(RoomEvent::Delete(own));
                }
            }
            for room in joined.rooms {
                let owner = index.own_room_member(SocketId::parse(&room));
                if let Some(members) = index.rooms.get_mut(&room) {
                    members.remove(&id);
                    let empty = members.is_empty();
                    if empty {
                        index.rooms.remove(&room);
                        self.interest(&room, false);
                    }
                    if watched {
                        events.push(RoomEvent::Leave(room.clone(), id));
                        if empty && owner.is_none() {
                            events.push(RoomEvent::Delete(room));
                        }
                    }
                }
            }
        }
        self.emit(events);
    }

    fn on_room_event(&self, listener: RoomListener) {
        self.listeners
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener);
    }

    fn socket_rooms(&self, id: SocketId) -> Vec<String> {
        let index = self.index();
        let Some(joined) = index.sids.get(&id) else {
            return Vec::new();
        };
        let mut rooms = Vec::with_capacity(usize::from(joined.own) + joined.rooms.len());
        if joined.own {
            rooms.push(id.to_string());
        }
        rooms.extend(joined.rooms.iter().cloned());
        rooms
    }

    fn rooms(&self) -> Vec<String> {
        let index = self.index();
        let mut rooms: Vec<String> = index.rooms.keys().cloned().collect();
        for (id, joined) in &index.sids {
            let own = id.to_string();
            // A room named like a socket id may also hold other sockets.
            if joined.own && !index.rooms.contains_key(&own) {
                rooms.push(own);
            }
        }
        rooms
    }

    fn for_each_local(&self, opts: &BroadcastOptions, f: &mut dyn FnMut(SocketId)) {
        let index = self.index();
        // Looked up once per broadcast, not once per recipient.
        let except: Vec<_> = opts
            .except
            .iter()
            .map(|room| {
                (
                    index.own_room_member(SocketId::parse(room)),
                    index.rooms.get(room),
                )
            })
            .collect();
        let excluded = |id: SocketId| {
            except.iter().any(|&(owner, members)| {
                owner == Some(id) || members.is_some_and(|m| m.contains(&id))
            })
        };
        if opts.rooms.is_empty() {
            for id in index.sids.keys() {
                if !excluded(*id) {
                    f(*id);
                }
            }
        } else if opts.rooms.len() == 1 {
            let room = &opts.rooms[0];
            // The own room's member is never also in `index.rooms[room]`.
            let own = index.own_room_member(SocketId::parse(room));
            let named = index.rooms.get(room).into_iter().flatten().copied();
            for id in own.into_iter().chain(named) {
                if !excluded(id) {
                    f(id);
                }
            }
        } else {
            // A socket in several target rooms still gets the packet once.
            let mut seen = HashSet::new();
            for room in &opts.rooms {
                let own = index.own_room_member(SocketId::parse(room));
                let named = index.rooms.get(room).into_iter().flatten().copied();
                for id in own.into_iter().chain(named) {
                    if seen.insert(id) && !excluded(id) {
                        f(id);
                    }
                }
            }
        }
    }

    fn next_offset(&self) -> Option<String> {
        self.log().map(|mut log| log.next_offset())
    }

    fn store_packet(&self, offset: &str, opts: &BroadcastOptions, packet: &EncodedPacket) {
        if let Some(mut log) = self.log() {
            log.store(offset, opts, packet);
        }
    }

    fn store_to_socket(&self, offset: &str, id: SocketId, packet: &EncodedPacket, written: bool) {
        if let Some(mut log) = self.log() {
            log.store_to_socket(offset, id, written, packet);
        }
    }

    fn persist_session(&self, session: PersistedSession) {
        if let Some(mut log) = self.log() {
            log.persist(session);
        }
    }

    fn restore_session(
        &self,
        pid: &str,
        offset: &str,
    ) -> futures_util::future::BoxFuture<'static, Option<Restored>> {
        let restored = self.log().and_then(|mut log| log.restore(pid, offset)).map(
            |(session, missed, horizon)| Restored {
                session,
                missed,
                // The middlewares may run long before the socket joins its
                // rooms: what is stored meanwhile is read from here.
                horizon: Some(horizon),
                hold: None,
            },
        );
        Box::pin(std::future::ready(restored))
    }

    /// What was stored for its rooms since the restore (broadcast while its
    /// middlewares ran, when it was in no room), read right before it joins
    /// them: a packet stored later (by a room listener, which runs once the
    /// socket is in every room) reaches it live and is not replayed. Exact
    /// where nothing else stores meanwhile, as on rsio's current-thread
    /// runtimes. On a multi-thread runtime a broadcast on another thread may
    /// store before the read and pick its recipients after the join (twice),
    /// or store after it and pick before (lost).
    fn join_restored(&self, id: SocketId, rooms: &[String], horizon: u64) -> Vec<EncodedPacket> {
        let missed = self
            .log()
            .map(|log| log.since(horizon, id, rooms))
            .unwrap_or_default();
        self.add_all(id, rooms);
        missed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Sid;

    /// Interest reports, in order.
    type Reports = std::sync::Arc<Mutex<Vec<(String, bool)>>>;

    /// An adapter whose interest reports are recorded.
    fn with_recorded_interest() -> (LocalAdapter, Reports) {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let adapter = LocalAdapter::with_interest(Box::new(move |room: &str, p: RoomPresence| {
            let present = matches!(p, RoomPresence::Appeared | RoomPresence::Confirmed(true));
            sink.lock().unwrap().push((room.to_string(), present));
        }));
        (adapter, seen)
    }

    #[test]
    fn interest_is_reported_for_the_first_member_in_and_the_last_out() {
        let (adapter, seen) = with_recorded_interest();
        let (a, b) = (Sid::random(), Sid::random());
        let rooms = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        adapter.add_all(a, &[a.to_string(), "r".into(), "s".into()]);
        adapter.add_all(b, &rooms(&["r"]));
        adapter.del(a, "r");
        adapter.del(b, "r");
        adapter.add_all(b, &rooms(&["t"]));
        adapter.del_all(a);
        adapter.del_all(b);
        // A room named like a socket id is never reported (the primary sends
        // those everywhere), nor is a socket's own room.
        adapter.add_all(a, &[b.to_string()]);
        adapter.del_all(a);
        let got = seen.lock().unwrap().clone();
        let want: Vec<(String, bool)> = [
            ("r", true),
            ("s", true),
            ("r", false),
            ("t", true),
            ("s", false),
            ("t", false),
        ]
        .iter()
        .map(|(r, p)| (r.to_string(), *p))
        .collect();
        assert_eq!(got, want);
        seen.lock().unwrap().clear();
        adapter.add_all(a, &rooms(&["u"]));
        adapter.report_presence(&rooms(&["u", "v"]));
        assert_eq!(
            seen.lock().unwrap().clone(),
            vec![("u".into(), true), ("u".into(), true), ("v".into(), false)]
        );
    }

    fn ids(adapter: &LocalAdapter, opts: &BroadcastOptions) -> HashSet<SocketId> {
        let mut out = HashSet::new();
        adapter.for_each_local(opts, &mut |id| assert!(out.insert(id), "delivered twice"));
        out
    }

    /// The room events `adapter` emits from now on, in order.
    fn record_room_events(adapter: &LocalAdapter) -> std::sync::Arc<Mutex<Vec<RoomEvent>>> {
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        adapter.on_room_event(std::sync::Arc::new(move |e: &RoomEvent| {
            sink.lock().unwrap().push(e.clone())
        }));
        seen
    }

    fn opts(rooms: &[&str], except: &[&str]) -> BroadcastOptions {
        BroadcastOptions {
            rooms: rooms.iter().map(|s| s.to_string()).collect(),
            except: except.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn selects_rooms_union_minus_except() {
        let a = LocalAdapter::default();
        let (x, y, z) = (Sid::random(), Sid::random(), Sid::random());
        a.add_all(x, &["r1".into(), "r2".into()]);
        a.add_all(y, &["r2".into()]);
        a.add_all(z, &["r3".into()]);
        assert_eq!(ids(&a, &opts(&[], &[])), HashSet::from([x, y, z]));
        assert_eq!(ids(&a, &opts(&["r1", "r2"], &[])), HashSet::from([x, y]));
        assert_eq!(ids(&a, &opts(&["r2"], &["r1"])), HashSet::from([y]));
        assert_eq!(ids(&a, &opts(&[], &["r2"])), HashSet::from([z]));
        assert_eq!(ids(&a, &opts(&["nope"], &[])), HashSet::new());
    }

    #[test]
    fn room_events_in_order() {
        let a = LocalAdapter::default();
        let seen = record_room_events(&a);
        let (x, y) = (Sid::random(), Sid::random());
        a.add_all(x, &["r".into()]);
        a.add_all(y, &["r".into()]);
        a.add_all(y, &["r".into()]);
        a.del(x, "r");
        a.del_all(y);
        use RoomEvent::*;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Create("r".into()),
                Join("r".into(), x),
                Join("r".into(), y),
                Leave("r".into(), x),
                Leave("r".into(), y),
                Delete("r".into()),
            ]
        );
    }

    #[test]
    fn leaving_cleans_empty_rooms() {
        let a = LocalAdapter::default();
        let x = Sid::random();
        a.add_all(x, &["r1".into(), "r2".into()]);
        a.del(x, "r1");
        assert_eq!(a.socket_rooms(x), vec!["r2".to_string()]);
        a.del_all(x);
        assert!(a.rooms().is_empty());
        assert!(a.socket_rooms(x).is_empty());
    }

    #[test]
    fn own_room_is_a_room_like_any_other() {
        let a = LocalAdapter::default();
        let seen = record_room_events(&a);
        let (x, y) = (Sid::random(), Sid::random());
        let (xs, ys) = (x.to_string(), y.to_string());
        a.add_all(x, &[xs.clone(), "r".into()]);
        a.add_all(y, std::slice::from_ref(&ys));
        assert_eq!(a.socket_rooms(x), vec![xs.clone(), "r".to_string()]);
        let mut rooms = a.rooms();
        rooms.sort();
        let mut expected = vec![xs.clone(), ys.clone(), "r".to_string()];
        expected.sort();
        assert_eq!(rooms, expected);
        // to(x), except(x) (socket.broadcast), to(x, y)
        assert_eq!(ids(&a, &opts(&[&xs], &[])), HashSet::from([x]));
        assert_eq!(ids(&a, &opts(&[], &[&xs])), HashSet::from([y]));
        assert_eq!(ids(&a, &opts(&[&xs, &ys], &[])), HashSet::from([x, y]));
        assert_eq!(ids(&a, &opts(&[&xs, "r"], &[])), HashSet::from([x]));
        // y joins x's id as a room: to(x) reaches both, once each
        a.add_all(y, std::slice::from_ref(&xs));
        assert_eq!(ids(&a, &opts(&[&xs], &[])), HashSet::from([x, y]));
        assert_eq!(ids(&a, &opts(&[], &[&xs])), HashSet::new());
        assert_eq!(a.socket_rooms(y), vec![ys.clone(), xs.clone()]);
        a.del(y, &xs);
        // x leaves its own room: to(x) no longer reaches it
        a.del(x, &xs);
        assert_eq!(ids(&a, &opts(&[&xs], &[])), HashSet::new());
        assert_eq!(a.socket_rooms(x), vec!["r".to_string()]);
        assert_eq!(ids(&a, &opts(&[], &[])), HashSet::from([x, y]));
        a.del_all(x);
        a.del_all(y);
        assert!(a.rooms().is_empty());
        use RoomEvent::*;
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                Create(xs.clone()),
                Join(xs.clone(), x),
                Create("r".into()),
                Join("r".into(), x),
                Create(ys.clone()),
                Join(ys.clone(), y),
                Join(xs.clone(), y),
                Leave(xs.clone(), y),
                Leave(xs.clone(), x),
                Delete(xs.clone()),
                Leave("r".into(), x),
                Delete("r".into()),
                Leave(ys.clone(), y),
                Delete(ys),
            ]
        );
    }
}
