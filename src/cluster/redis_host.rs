//! The primary's side of `--redis`: it is its host's one reader of the
//! broadcasts on Redis ([`super::redis::host_reader`]) and forwards each entry
//! or message to its workers, but for the one that published it when that
//! worker does not need it back (see [`Message::RedisMember`]).
//!
//! A broadcast to named rooms (no acks) goes only to the workers whose lanes
//! have one of its rooms in the interest hints (see [`crate::adapter::hints`]):
//! a worker's Redis adapter sets its bit before the join that made a room
//! returns, so a broadcast written after that join is forwarded to it.
//! Everything else (to every socket, a room shaped like a socket id, with
//! acks, requests, answers, joins and leaves) goes to every worker. With
//! connection state recovery, a worker restoring a session sets its bit for
//! the session's rooms before it reads the stream for what it missed (see
//! `adapter::redis::session::restore`): what this reads after that reaches
//! it, what it read before is in the stream.
//! A join read on Redis (`socketsJoin`) is applied by a worker after the
//! primary read it, maybe after it read the broadcast that followed it: the
//! rooms it joins are forced in the hints, and broadcasts to them go to every
//! worker until each worker it was forwarded to has echoed the fence sent
//! right behind it (see [`super::fences`]); for good when it was read during
//! a reload.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use rsio_ipc::{EncodedFrame, Message, DEFAULT_MAX_FRAME_LENGTH};
use tracing::warn;

use super::primary::{Event, Primary};
use crate::adapter::{HostReader, Route};

/// The Redis identities (uids) of this host's workers.
#[derive(Default)]
pub(crate) struct RedisMembers {
    /// uid → (worker, generation of its process, whether it needs its own entries).
    by_uid: HashMap<Bytes, (usize, u64, bool)>,
}

impl RedisMembers {
    /// `uid` is worker `worker`'s (process `generation`); the uids of its
    /// earlier processes are forgotten.
    pub(crate) fn register(&mut self, worker: usize, generation: u64, uid: &str, own: bool) {
        self.by_uid
            .retain(|_, (w, g, _)| *w != worker || *g == generation);
        self.by_uid.insert(
            Bytes::copy_from_slice(uid.as_bytes()),
            (worker, generation, own),
        );
    }

    /// The worker process that published under `uid` and does not need it back.
    fn skip(&self, uid: &[u8]) -> Option<(usize, u64)> {
        match self.by_uid.get(uid) {
            Some(&(w, g, false)) => Some((w, g)),
            _ => None,
        }
    }
}

/// Starts the host's reader on the current runtime (the primary's), when
/// `--redis` is set; it lives as long as what is returned.
pub(super) fn start(primary: &Primary) -> Option<Arc<HostReader>> {
    let options = primary.config.redis.as_ref()?;
    let events = primary.events.clone();
    let forward = move |message: Message, from: Option<Bytes>, to: Route| match EncodedFrame::encode(
        &message,
        DEFAULT_MAX_FRAME_LENGTH,
    ) {
        Ok(frame) => {
            let _ = events.send(Event::Redis { frame, from, to });
        }
        Err(err) => warn!(target: "cluster", "cannot forward a redis entry: {err}"),
    };
    match super::redis::host_reader(options, forward) {
        Ok(reader) => {
            reader.start();
            Some(reader)
        }
        // Refused before: `cluster::run` checks the options.
        Err(err) => {
            warn!(target: "cluster", "no redis reader: {err}");
            None
        }
    }
}

impl Primary {
    /// Worker `worker` (process `generation`) is the member `uid` of `nsp`.
    pub(super) fn redis_member(
        &mut self,
        worker: usize,
        generation: u64,
        nsp: &str,
        uid: &str,
        own_entries: bool,
    ) {
        self.redis_members
            .register(worker, generation, uid, own_entries);
        if let Some(reader) = &self.redis_reader {
            reader.watch(nsp);
        }
    }

    /// Sends what the host's reader read to the workers it is for (`to`, by
    /// the interest hints), but for the one that published it (when it does
    /// not need it back), to the processes a reload drains (they still
    /// serve their clients), and to those it starts (by the hints too).
    pub(super) fn forward_redis(&mut self, frame: &EncodedFrame, from: Option<&[u8]>, to: &Route) {
        let skip = from
            .and_then(|uid| self.redis_members.skip(uid))
            .filter(|&(w, g)| self.slots[w].generation == g)
            .map(|(w, _)| w);
        let mut forced = None;
        let lanes = match to {
            Route::Rooms { nsp, rooms } => self.lanes.table().and_then(|t| t.lanes_of(nsp, rooms)),
            Route::Join { nsp, rooms } => {
                // A worker may apply this join after the next broadcast to
                // these rooms is read: they go everywhere until every worker
                // has applied it (a fence behind it, below).
                if let Some(table) = self.lanes.table().filter(|_| !rooms.is_empty()) {
                    let slots = table.forced_slots(nsp, rooms);
                    table.force(&slots);
                    forced = Some(slots);
                }
                None
            }
            Route::Everyone => None,
        };
        let wanted = |lane: Option<usize>| match (&lanes, lane) {
            (Some(set), Some(lane)) => set.contains(lane),
            // No hints for it: it may have members.
            _ => true,
        };
        let mut reached = Vec::new();
        for j in 0..self.slots.len() {
            if wanted(self.slots[j].lane) && Some(j) != skip {
                self.send_to(j, frame.clone());
                if forced.is_some() {
                    reached.push(j);
                }
            }
        }
        if let Some(slots) = forced {
            self.fence_join(slots, reached);
        }
        for slot in &self.slots {
            if let Some(s) = slot.retiring.as_ref().and_then(|p| p.sender.as_ref()) {
                let _ = s.send_frame(frame.clone());
            }
            // A reload's new process serves clients from its `Ready` on, maybe
            // before the primary handled it (and swapped): it may restore a
            // session, or join a room, before then. Routed by its own lane.
            if let Some(p) = slot.incoming.as_ref().filter(|p| wanted(p.lane)) {
                if let Some(s) = &p.sender {
                    let _ = s.send_frame(frame.clone());
                }
            }
        }
    }
}

impl Primary {
    /// Follows a join read on Redis, which forced `slots`, with a fence to
    /// each worker it `reached`. During a reload it stays forced for good: the
    /// incoming process gets the join too, and is not one of the workers a
    /// fence waits for.
    fn fence_join(&mut self, slots: Vec<usize>, reached: Vec<usize>) {
        if self.slots.iter().any(|s| s.incoming.is_some()) {
            return;
        }
        self.fence_slots(slots, reached);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rsio_ipc::{IpcConnection, IpcReader};

    use super::*;

    /// Each (worker, uid, needs its own entries) tells the primary it is a member of `/`.
    fn members(primary: &mut Primary, list: &[(usize, &str, bool)]) {
        for &(worker, uid, own_entries) in list {
            let message = Message::RedisMember {
                nsp: "/".into(),
                uid: uid.into(),
                own_entries,
            };
            let frame = EncodedFrame::encode(&message, DEFAULT_MAX_FRAME_LENGTH).unwrap();
            primary.on_message(worker, message, frame, false);
        }
    }

    fn entry(id: &str, uid: &str) -> Event {
        let message = Message::RedisEntry {
            id: id.into(),
            fields: vec![Bytes::from_static(b"uid"), Bytes::from(uid.to_string())],
        };
        Event::Redis {
            frame: EncodedFrame::encode(&message, DEFAULT_MAX_FRAME_LENGTH).unwrap(),
            from: Some(Bytes::from(uid.to_string())),
            to: Route::Everyone,
        }
    }

    /// The id of the next entry `reader` gets (the fences behind joins skipped).
    async fn next_id(reader: &mut IpcReader) -> String {
        loop {
            let got = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
            match got {
                Ok(Some(Ok(Message::RedisEntry { id, .. }))) => return id,
                Ok(Some(Ok(Message::Fence { .. }))) => {}
                other => panic!("expected an entry, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn the_publisher_gets_its_own_entries_back_only_when_it_needs_them() {
        let mut primary = Primary::for_tests(3);
        let mut readers = primary.connect_for_tests();
        members(&mut primary, &[(0, "w0", false), (1, "w1", true)]);
        for (id, uid) in [("1-0", "w0"), ("2-0", "w1"), ("3-0", "node")] {
            assert!(primary.on_event(entry(id, uid)).is_none());
        }
        let mut got = Vec::new();
        for (j, reader) in readers.iter_mut().enumerate() {
            let count = if j == 0 { 2 } else { 3 };
            for _ in 0..count {
                got.push((j, next_id(reader).await));
            }
        }
        let want = [
            (0, "2-0"),
            (0, "3-0"),
            (1, "1-0"),
            (1, "2-0"),
            (1, "3-0"),
            (2, "1-0"),
            (2, "2-0"),
            (2, "3-0"),
        ];
        let got: Vec<(usize, &str)> = got.iter().map(|(j, id)| (*j, id.as_str())).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_worker_that_needs_nothing_back_is_skipped_until_it_restarts() {
        let mut m = RedisMembers::default();
        m.register(0, 7, "aaaa", false);
        m.register(1, 3, "bbbb", true);
        assert_eq!(m.skip(b"aaaa"), Some((0, 7)));
        assert_eq!(m.skip(b"bbbb"), None, "it delivers its own on read-back");
        assert_eq!(m.skip(b"emitter"), None);
        // Worker 0's next process: the old uid is gone, the new one counts.
        m.register(0, 8, "cccc", false);
        assert_eq!(m.skip(b"aaaa"), None);
        assert_eq!(m.skip(b"cccc"), Some((0, 8)));
        // Another namespace of the same process keeps the first.
        m.register(0, 8, "dddd", false);
        assert_eq!(m.skip(b"cccc"), Some((0, 8)));
    }

    fn routed_entry(id: &str, room: Option<&str>) -> Event {
        let rooms = room.map_or(String::new(), |r| format!("\"{r}\""));
        let data = format!(
            r#"{{"packet":{{"type":2,"data":["e"]}},"opts":{{"rooms":[{rooms}],"except":[],"flags":{{}}}}}}"#
        );
        let fields: Vec<Bytes> = ["uid", "node", "nsp", "/", "type", "3", "data", &data]
            .iter()
            .map(|s| Bytes::from(s.to_string()))
            .collect();
        let fed = crate::adapter::Fed::Entry {
            id: id.into(),
            fields,
        };
        let to = fed.route();
        let crate::adapter::Fed::Entry { id, fields } = fed else {
            unreachable!()
        };
        Event::Redis {
            frame: EncodedFrame::encode(
                &Message::RedisEntry { id, fields },
                DEFAULT_MAX_FRAME_LENGTH,
            )
            .unwrap(),
            from: Some(Bytes::from_static(b"node")),
            to,
        }
    }

    #[tokio::test]
    async fn a_room_broadcast_goes_only_to_the_workers_with_members_recovery_or_not() {
        use crate::adapter::hints::{HintTable, Hints};
        let mut primary = Primary::for_tests(3);
        primary.lanes = super::super::lanes::Lanes::new(3);
        let mut readers = Vec::new();
        let mut assigned = Vec::new();
        for j in 0..3 {
            let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
            let a = primary.lanes.assign(j).expect("a lane");
            primary.slots[j].lane = Some(a.lane);
            primary.slots[j].sender = Some(IpcConnection::new(ours).into_split().1);
            readers.push(IpcConnection::new(theirs).into_split().0);
            assigned.push(a);
        }
        // Worker 1 has a member of "r"; worker 2 has recovery (it wants its
        // own entries back), which alone brings it nothing.
        let hints_of = |primary: &Primary, j: usize| {
            let fd = primary.lanes.memfd().unwrap();
            let lane = primary.slots[j].lane.unwrap();
            Hints::new(HintTable::open(fd).unwrap(), lane).unwrap()
        };
        let hints = hints_of(&primary, 1);
        hints.appeared("/", "r");
        members(
            &mut primary,
            &[(0, "w0", false), (1, "w1", false), (2, "w2", true)],
        );
        for (id, room) in [("1-0", Some("r")), ("2-0", Some("nobody")), ("3-0", None)] {
            assert!(primary.on_event(routed_entry(id, room)).is_none());
        }
        hints.gone("/", "r");
        assert!(primary.on_event(routed_entry("4-0", Some("r"))).is_none());
        // A join read on Redis: worker 0 may apply it after the primary reads
        // the next broadcast to "j", which goes everywhere until every worker
        // echoed the fence behind the join (none does here).
        let join = r#"{"opts":{"rooms":["x"],"except":[]},"rooms":["j"]}"#;
        let fields: Vec<Bytes> = ["uid", "node", "nsp", "/", "type", "4", "data", join]
            .iter()
            .map(|s| Bytes::from(s.to_string()))
            .collect();
        let to = crate::adapter::Fed::Entry {
            id: "5-0".into(),
            fields: fields.clone(),
        }
        .route();
        let message = Message::RedisEntry {
            id: "5-0".into(),
            fields,
        };
        let frame = EncodedFrame::encode(&message, DEFAULT_MAX_FRAME_LENGTH).unwrap();
        let from = Some(Bytes::from_static(b"node"));
        assert!(primary.on_event(Event::Redis { frame, from, to }).is_none());
        assert!(primary.on_event(routed_entry("6-0", Some("j"))).is_none());
        // Worker 2 restores a session of "h": its bit is held (as a member's)
        // while it reads what the session missed, then let go.
        let restoring = hints_of(&primary, 2);
        restoring.appeared("/", "h");
        assert!(primary.on_event(routed_entry("7-0", Some("h"))).is_none());
        restoring.gone("/", "h");
        assert!(primary.on_event(routed_entry("8-0", Some("h"))).is_none());
        assert!(primary.on_event(routed_entry("9-0", None)).is_none());
        // What each got, up to the last: in order, so what comes first proves
        // what was not sent.
        let want: [&[&str]; 3] = [
            &["3-0", "5-0", "6-0", "9-0"],
            &["1-0", "3-0", "5-0", "6-0", "9-0"],
            &["3-0", "5-0", "6-0", "7-0", "9-0"],
        ];
        for (j, reader) in readers.iter_mut().enumerate() {
            for id in want[j] {
                assert_eq!(next_id(reader).await, *id, "worker {j}");
            }
        }
    }

    #[tokio::test]
    async fn a_reload_s_new_process_gets_what_it_holds_before_its_swap() {
        use super::super::supervise::Process;
        use crate::adapter::hints::{HintTable, Hints};
        let mut primary = Primary::for_tests(1);
        primary.lanes = super::super::lanes::Lanes::new(1);
        let pair = || {
            let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
            let sender = IpcConnection::new(ours).into_split().1;
            (sender, IpcConnection::new(theirs).into_split().0)
        };
        let (serving, mut serving_reader) = pair();
        let (next, mut next_reader) = pair();
        let serving_lanes = primary.lanes.assign(0).expect("a lane");
        primary.slots[0].lane = Some(serving_lanes.lane);
        primary.slots[0].sender = Some(serving);
        // Its new process is ready, not yet swapped in, and restores a
        // session of "h" (on the slot's other lane).
        let next_lanes = primary.lanes.assign(0).expect("the slot's other lane");
        let mut incoming = Process::fake(2);
        incoming.lane = Some(next_lanes.lane);
        incoming.sender = Some(next);
        primary.slots[0].incoming = Some(incoming);
        let fd = primary.lanes.memfd().unwrap();
        let restoring = Hints::new(HintTable::open(fd).unwrap(), next_lanes.lane).unwrap();
        restoring.appeared("/", "h");
        for (id, room) in [("1-0", Some("h")), ("2-0", Some("x")), ("3-0", None)] {
            assert!(primary.on_event(routed_entry(id, room)).is_none());
        }
        assert_eq!(next_id(&mut serving_reader).await, "3-0");
        for id in ["1-0", "3-0"] {
            assert_eq!(next_id(&mut next_reader).await, id);
        }
    }

    #[tokio::test]
    async fn a_join_read_on_redis_forces_its_rooms_until_every_worker_echoed_its_fence() {
        let mut primary = Primary::for_tests(3);
        primary.lanes = super::super::lanes::Lanes::new(3);
        let mut readers = primary.connect_for_tests();
        let join = Message::RedisEntry {
            id: "1-0".into(),
            fields: Vec::new(),
        };
        primary.on_event(Event::Redis {
            frame: EncodedFrame::encode(&join, DEFAULT_MAX_FRAME_LENGTH).unwrap(),
            from: None,
            to: Route::Join {
                nsp: "/".into(),
                rooms: vec!["j".into()],
            },
        });
        let table = |p: &Primary| {
            p.lanes
                .table()
                .unwrap()
                .forced(p.lanes.table().unwrap().slot("/", "j"))
        };
        assert!(
            table(&primary),
            "forced while the workers may not have applied it"
        );
        let mut fences = Vec::new();
        for reader in &mut readers {
            assert_eq!(next_id(reader).await, "1-0");
            let got = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
            match got {
                Ok(Some(Ok(fence @ Message::Fence { .. }))) => fences.push(fence),
                other => panic!("expected a fence right after the join, got {other:?}"),
            }
        }
        for (j, fence) in fences.into_iter().enumerate() {
            assert!(table(&primary), "worker {j} has not echoed yet");
            let frame = EncodedFrame::encode(&fence, DEFAULT_MAX_FRAME_LENGTH).unwrap();
            primary.on_message(j, fence, frame, false);
        }
        assert!(
            !table(&primary),
            "every worker applied it: routed by the lanes again"
        );
    }
}
