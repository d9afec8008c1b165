//! The in-memory adapter: this process's rooms index and, with connection state
//! recovery, its session store and packet log.

use std::{
    collections::{HashMap, HashSet},
    sync::{Mutex, MutexGuard, RwLock},
};

use super::{
    recovery::{PersistedSession, RecoveryConfig, RecoveryLog},
    Adapter, BroadcastOptions, EncodedPacket, Restored, RoomEvent, RoomListener, SocketId,
};

/// Socket ids are random and made by the server, so they are hashed with the
/// fast foldhash; room names may come from clients and keep the keyed SipHash.
type IdHasher = foldhash::fast::RandomState;

#[derive(Debug, Default)]
struct RoomIndex {
    rooms: HashMap<String, HashSet<SocketId, IdHasher>>,
    /// Each socket's rooms in the order it joined them (Node's `socket.rooms` is an ordered Set).
    sids: HashMap<SocketId, Vec<String>, IdHasher>,
}

/// The default adapter: everything stays in this process.
#[derive(Default)]
pub struct LocalAdapter {
    index: Mutex<RoomIndex>,
    recovery: Option<Mutex<RecoveryLog>>,
    listeners: RwLock<Vec<RoomListener>>,
}

impl std::fmt::Debug for LocalAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalAdapter").finish_non_exhaustive()
    }
}

impl LocalAdapter {
    pub fn new(recovery: Option<RecoveryConfig>) -> LocalAdapter {
        LocalAdapter {
            index: Mutex::default(),
            recovery: recovery.map(|c| Mutex::new(RecoveryLog::new(c))),
            listeners: RwLock::default(),
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
                listener(event);
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
                let joined = index.sids.entry(id).or_default();
                if !joined.contains(room) {
                    joined.push(room.clone());
                }
                let members = index.rooms.entry(room.clone()).or_default();
                if watched && members.is_empty() {
                    events.push(RoomEvent::Create(room.clone()));
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
            if let Some(rooms) = index.sids.get_mut(&id) {
                rooms.retain(|r| r != room);
            }
            if let Some(members) = index.rooms.get_mut(room) {
                if members.remove(&id) && watched {
                    events.push(RoomEvent::Leave(room.to_string(), id));
                }
                if members.is_empty() {
                    index.rooms.remove(room);
                    if watched {
                        events.push(RoomEvent::Delete(room.to_string()));
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
            let Some(rooms) = index.sids.remove(&id) else {
                return;
            };
            for room in rooms {
                if let Some(members) = index.rooms.get_mut(&room) {
                    members.remove(&id);
                    let empty = members.is_empty();
                    if empty {
                        index.rooms.remove(&room);
                    }
                    if watched {
                        events.push(RoomEvent::Leave(room.clone(), id));
                        if empty {
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
        self.index().sids.get(&id).cloned().unwrap_or_default()
    }

    fn rooms(&self) -> Vec<String> {
        self.index().rooms.keys().cloned().collect()
    }

    fn for_each_local(&self, opts: &BroadcastOptions, f: &mut dyn FnMut(SocketId)) {
        let index = self.index();
        let excluded = |id: &SocketId| {
            opts.except
                .iter()
                .any(|room| index.rooms.get(room).is_some_and(|m| m.contains(id)))
        };
        if opts.rooms.is_empty() {
            for id in index.sids.keys() {
                if !excluded(id) {
                    f(*id);
                }
            }
        } else if opts.rooms.len() == 1 {
            if let Some(members) = index.rooms.get(&opts.rooms[0]) {
                for id in members {
                    if !excluded(id) {
                        f(*id);
                    }
                }
            }
        } else {
            // A socket in several target rooms still gets the packet once.
            let mut seen = HashSet::new();
            for room in &opts.rooms {
                let Some(members) = index.rooms.get(room) else {
                    continue;
                };
                for id in members {
                    if seen.insert(*id) && !excluded(id) {
                        f(*id);
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
        let restored =
            self.log()
                .and_then(|mut log| log.restore(pid, offset))
                .map(|(session, missed)| Restored {
                    session,
                    missed,
                    horizon: None,
                });
        Box::pin(std::future::ready(restored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Sid;

    fn ids(adapter: &LocalAdapter, opts: &BroadcastOptions) -> HashSet<SocketId> {
        let mut out = HashSet::new();
        adapter.for_each_local(opts, &mut |id| assert!(out.insert(id), "delivered twice"));
        out
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
        let seen = std::sync::Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        a.on_room_event(std::sync::Arc::new(move |e: &RoomEvent| {
            sink.lock().unwrap().push(e.clone())
        }));
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
}
