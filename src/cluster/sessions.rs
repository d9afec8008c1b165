//! Connection state recovery across workers, kept by the primary: one offset
//! sequence for the whole cluster, the log of recoverable packets, and the
//! sessions of recoverable sockets (which outlive the worker that held them).
//!
//! The primary relays all cluster traffic on one thread, so nothing here walks
//! every stored session per packet: the log expires from its front (each packet
//! is dropped once), and disconnected sessions expire from an index ordered by
//! the time they disconnected (every session has the same window, so that is
//! their deadline order).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::{BufMut, Bytes, BytesMut};
use rsio_ipc::{Broadcast, Frame, Session};

struct Logged {
    offset: u64,
    at: Instant,
    nsp: String,
    rooms: Vec<String>,
    except: Vec<String>,
    frames: Vec<Frame>,
}

/// When a session disconnected, made unique by a counter: its key in the expiry index.
type DisconnectKey = (Instant, u64);

struct Kept {
    session: Session,
    worker: usize,
    /// `None` while the socket is connected.
    disconnected: Option<DisconnectKey>,
}

pub(crate) struct SessionStore {
    max: Duration,
    next: u64,
    log: VecDeque<Logged>,
    sessions: HashMap<String, Kept>,
    /// The pid of every disconnected session, oldest first; exactly one entry per
    /// session whose `disconnected` is set.
    expiry: BTreeMap<DisconnectKey, String>,
    disconnects: u64,
}

impl SessionStore {
    pub(crate) fn new() -> SessionStore {
        SessionStore {
            max: Duration::ZERO,
            // Offsets of an earlier primary must never match this one's.
            next: u64::from(rand::random::<u32>()) * 1_000_000,
            log: VecDeque::new(),
            sessions: HashMap::new(),
            expiry: BTreeMap::new(),
            disconnects: 0,
        }
    }

    /// Recovery is on somewhere: keep packets and sessions at least this long.
    pub(crate) fn enable(&mut self, max: Duration) {
        self.max = self.max.max(max);
    }

    /// Drops the packets and disconnected sessions older than the window: only
    /// the expired ones are visited, plus one look at each front.
    fn expire(&mut self, now: Instant) {
        let max = self.max;
        while self
            .log
            .front()
            .is_some_and(|p| now.duration_since(p.at) > max)
        {
            self.log.pop_front();
        }
        while let Some(entry) = self.expiry.first_entry() {
            if now.duration_since(entry.key().0) <= max {
                break;
            }
            let pid = entry.remove();
            self.sessions.remove(&pid);
        }
    }

    /// Marks a session disconnected at `now`, unless it already is.
    fn disconnect(
        expiry: &mut BTreeMap<DisconnectKey, String>,
        counter: &mut u64,
        pid: &str,
        k: &mut Kept,
        now: Instant,
    ) {
        if k.disconnected.is_none() {
            *counter += 1;
            let key = (now, *counter);
            k.disconnected = Some(key);
            expiry.insert(key, pid.to_string());
        }
    }

    /// Forgets a stored session (and its place in the expiry index).
    fn remove(&mut self, pid: &str) -> Option<Kept> {
        let kept = self.sessions.remove(pid)?;
        if let Some(key) = kept.disconnected {
            self.expiry.remove(&key);
        }
        Some(kept)
    }

    /// Gives a broadcast the next offset, appended as its last argument, and logs it.
    /// `false` when the packet cannot carry one (then it is relayed as it is).
    pub(crate) fn sequence(&mut self, b: &mut Broadcast) -> bool {
        let offset = self.next + 1;
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(offset);
        let spliced = match b.frames.first() {
            Some(Frame::Text(text)) if text.last() == Some(&b']') => {
                let mut spliced = BytesMut::with_capacity(text.len() + digits.len() + 3);
                spliced.put_slice(&text[..text.len() - 1]);
                spliced.put_slice(b",\"");
                spliced.put_slice(digits.as_bytes());
                spliced.put_slice(b"\"]");
                Frame::Text(Bytes::from(spliced))
            }
            // A server with the msgpack parser: the offset joins the `data` array.
            Some(Frame::Binary(packet)) => {
                match crate::parser::msgpack::append_string_arg(packet, digits) {
                    Some(p) => Frame::Binary(p),
                    None => return false,
                }
            }
            _ => return false,
        };
        self.next = offset;
        b.frames[0] = spliced;
        b.offset = Some(offset);
        let now = Instant::now();
        self.expire(now);
        self.log.push_back(Logged {
            offset,
            at: now,
            nsp: b.nsp.clone(),
            rooms: b.target.rooms.clone(),
            except: b.target.except.clone(),
            frames: b.frames.clone(),
        });
        true
    }

    pub(crate) fn horizon(&self) -> u64 {
        self.next
    }

    /// A socket's session, stored or updated: connected (not expiring) from now.
    pub(crate) fn update(&mut self, worker: usize, session: Session) {
        let pid = session.pid.clone();
        let earlier = self.sessions.insert(
            pid,
            Kept {
                session,
                worker,
                disconnected: None,
            },
        );
        // A re-persisted session's earlier deadline no longer applies.
        if let Some(key) = earlier.and_then(|k| k.disconnected) {
            self.expiry.remove(&key);
        }
    }

    pub(crate) fn closed(&mut self, pid: &str, recoverable: bool) {
        let now = Instant::now();
        if !recoverable {
            self.remove(pid);
        } else if let Some(k) = self.sessions.get_mut(pid) {
            Self::disconnect(&mut self.expiry, &mut self.disconnects, pid, k, now);
        }
        self.expire(now);
    }

    /// A worker died: its connected sockets count as disconnected from now.
    pub(crate) fn worker_gone(&mut self, worker: usize) {
        let now = Instant::now();
        for (pid, k) in &mut self.sessions {
            if k.worker == worker {
                Self::disconnect(&mut self.expiry, &mut self.disconnects, pid, k, now);
            }
        }
    }

    /// The sessions held by `from` are held by `to` from now (a reload's old worker
    /// gets its own key, so that its exit disconnects its sessions only).
    pub(crate) fn move_worker(&mut self, from: usize, to: usize) {
        for k in self.sessions.values_mut() {
            if k.worker == from {
                k.worker = to;
            }
        }
    }

    /// The session of `pid` (once) and the packets it missed after `offset`.
    pub(crate) fn restore(
        &mut self,
        nsp: &str,
        pid: &str,
        offset: &str,
    ) -> Option<(Session, Vec<Vec<Frame>>)> {
        self.expire(Instant::now());
        let kept = self.sessions.get(pid)?;
        if kept.disconnected.is_none() || kept.session.nsp != nsp {
            return None;
        }
        let session = self.remove(pid)?.session;
        let offset: u64 = offset.parse().ok()?;
        let start = self.log.partition_point(|p| p.offset < offset);
        if self.log.get(start).map(|p| p.offset) != Some(offset) {
            return None;
        }
        let mut rooms = session.rooms.clone();
        rooms.push(session.id.clone());
        let missed = self
            .log
            .iter()
            .skip(start + 1)
            .filter(|p| p.nsp == nsp && crate::adapter::reaches(&p.rooms, &p.except, &rooms))
            .map(|p| p.frames.clone())
            .collect();
        Some((session, missed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsio_ipc::Target;

    fn broadcast(text: &str, rooms: &[&str]) -> Broadcast {
        Broadcast {
            nsp: "/".into(),
            target: Target {
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                ..Target::default()
            },
            ack: None,
            offset: Some(0),
            frames: vec![Frame::Text(Bytes::from(text.to_string()))],
        }
    }

    fn session(pid: &str) -> Session {
        Session {
            nsp: "/".into(),
            pid: pid.into(),
            id: "sock".into(),
            rooms: vec!["r".into()],
            data: b"{}".to_vec(),
        }
    }

    #[test]
    fn sequences_and_restores_missed_packets() {
        let mut store = SessionStore::new();
        store.enable(Duration::from_secs(60));
        let mut first = broadcast("42[\"a\"]", &[]);
        assert!(store.sequence(&mut first));
        let offset = first.offset.unwrap();
        assert_eq!(
            first.frames[0],
            Frame::Text(Bytes::from(format!("42[\"a\",\"{offset}\"]")))
        );
        store.update(1, session("p"));
        assert!(
            store.restore("/", "p", &offset.to_string()).is_none(),
            "still connected"
        );
        store.update(1, session("p"));
        store.closed("p", true);
        for (text, rooms) in [
            ("42[\"r\"]", vec!["r"]),
            ("42[\"x\"]", vec!["x"]),
            ("42[\"own\"]", vec!["sock"]),
        ] {
            store.sequence(&mut broadcast(text, &rooms));
        }
        let (s, missed) = store.restore("/", "p", &offset.to_string()).unwrap();
        assert_eq!(s.id, "sock");
        assert_eq!(missed.len(), 2);
        assert!(
            store.restore("/", "p", &offset.to_string()).is_none(),
            "once"
        );
    }

    #[test]
    fn dead_worker_makes_sessions_recoverable_and_unknown_offsets_fail() {
        let mut store = SessionStore::new();
        store.enable(Duration::from_secs(60));
        store.update(2, session("p"));
        store.worker_gone(2);
        assert!(
            store.restore("/", "p", "1").is_none(),
            "offset not in the log"
        );
        store.update(2, session("q"));
        store.closed("q", false);
        assert!(store.sessions.is_empty());
        assert!(!store.sequence(&mut Broadcast {
            frames: vec![Frame::Binary(Bytes::new())],
            ..broadcast("", &[])
        }));
    }

    const MAX: Duration = Duration::from_secs(60);
    const TICK: Duration = Duration::from_millis(1);

    fn store() -> SessionStore {
        let mut store = SessionStore::new();
        store.enable(MAX);
        store
    }

    /// Disconnected sessions, counted by walking them: what the index must match.
    fn disconnected(store: &SessionStore) -> usize {
        store
            .sessions
            .values()
            .filter(|k| k.disconnected.is_some())
            .count()
    }

    /// Closes `pid` (recoverable); the instants just before and after.
    fn close(store: &mut SessionStore, pid: &str) -> (Instant, Instant) {
        let before = Instant::now();
        store.closed(pid, true);
        (before, Instant::now())
    }

    #[test]
    fn session_and_packets_expire_at_their_deadline_not_before() {
        let mut store = store();
        store.update(1, session("p"));
        store.update(1, session("connected"));
        let (before, after) = close(&mut store, "p");
        store.sequence(&mut broadcast("42[\"a\"]", &[]));
        store.expire(before + MAX);
        assert!(store.sessions.contains_key("p"), "not before its deadline");
        assert_eq!(store.log.len(), 1);
        store.expire(Instant::now() + MAX + TICK);
        assert!(!store.sessions.contains_key("p"), "gone after it");
        assert!(store.log.is_empty());
        assert!(store.expiry.is_empty());
        assert!(after <= Instant::now());
        assert!(
            store.sessions.contains_key("connected"),
            "a connected socket's session never expires"
        );
    }

    #[test]
    fn a_re_persisted_session_is_not_expired_by_its_old_deadline() {
        let mut store = store();
        store.update(1, session("p"));
        let (_, first) = close(&mut store, "p");
        // Restored on another worker: connected again, then disconnected later.
        store.update(2, session("p"));
        assert!(store.expiry.is_empty(), "the old deadline is gone");
        store.expire(first + MAX + TICK);
        assert!(store.sessions.contains_key("p"), "connected: kept");
        std::thread::sleep(Duration::from_millis(20));
        let (second, _) = close(&mut store, "p");
        assert!(second > first + TICK);
        store.expire(first + MAX + TICK);
        assert!(
            store.sessions.contains_key("p"),
            "the first disconnection's deadline does not apply"
        );
        assert_eq!(store.expiry.len(), 1);
        store.expire(Instant::now() + MAX + TICK);
        assert!(store.sessions.is_empty());
        assert!(store.expiry.is_empty());
    }

    #[test]
    fn restore_and_forget_remove_the_deadline() {
        let mut store = store();
        let mut first = broadcast("42[\"a\"]", &[]);
        store.sequence(&mut first);
        store.update(1, session("p"));
        store.update(1, session("q"));
        close(&mut store, "p");
        close(&mut store, "q");
        assert_eq!(store.expiry.len(), 2);
        assert!(store
            .restore("/", "p", &first.offset.unwrap().to_string())
            .is_some());
        store.closed("q", false);
        assert!(store.sessions.is_empty());
        assert!(store.expiry.is_empty());
    }

    #[test]
    fn worker_gone_disconnects_its_connected_sockets_from_now() {
        let mut store = store();
        store.update(2, session("early"));
        let (_, early) = close(&mut store, "early");
        store.update(2, session("connected"));
        store.update(3, session("elsewhere"));
        std::thread::sleep(Duration::from_millis(20));
        let gone = Instant::now();
        store.worker_gone(2);
        assert_eq!(disconnected(&store), 2);
        assert_eq!(store.expiry.len(), 2);
        // "early" keeps its own, earlier deadline.
        store.expire(early + MAX + TICK);
        assert!(!store.sessions.contains_key("early"));
        assert!(store.sessions.contains_key("connected"));
        store.expire(gone + MAX);
        assert!(store.sessions.contains_key("connected"), "not before");
        store.expire(Instant::now() + MAX + TICK);
        assert!(!store.sessions.contains_key("connected"));
        assert!(
            store.sessions.contains_key("elsewhere"),
            "another worker's connected socket"
        );
        assert!(store.expiry.is_empty());
    }

    #[test]
    fn the_expiry_index_stays_the_size_of_the_disconnected_sessions_under_churn() {
        let mut store = store();
        let mut logged = broadcast("42[\"a\"]", &[]);
        store.sequence(&mut logged);
        let offset = logged.offset.unwrap().to_string();
        for round in 0..20_000 {
            let pid = format!("p{}", round % 50);
            store.update(round % 3, session(&pid));
            match round % 7 {
                0 => store.closed(&pid, false),
                1 => store.worker_gone(round % 3),
                2 => {
                    store.closed(&pid, true);
                    store.closed(&pid, true);
                }
                3 => {
                    store.closed(&pid, true);
                    store.restore("/", &pid, &offset);
                }
                _ => store.closed(&pid, true),
            }
            assert_eq!(store.expiry.len(), disconnected(&store), "round {round}");
            assert!(store.sessions.len() <= 50);
        }
        store.expire(Instant::now() + MAX + TICK);
        assert!(store.expiry.is_empty());
        assert!(store.sessions.values().all(|k| k.disconnected.is_none()));
    }

    #[test]
    fn a_moved_worker_exit_disconnects_its_sessions_only() {
        let mut store = SessionStore::new();
        store.enable(Duration::from_secs(60));
        let mut first = broadcast("42[\"a\"]", &[]);
        assert!(store.sequence(&mut first));
        let offset = first.offset.unwrap().to_string();
        // The old process of slot 0 held "old"; after the swap its sessions have key 2
        // (slot count + index), and the new process of slot 0 holds "new".
        store.update(0, session("old"));
        store.move_worker(0, 2);
        store.update(0, session("new"));
        store.worker_gone(2);
        assert!(
            store.restore("/", "new", &offset).is_none(),
            "still connected"
        );
        assert!(store.restore("/", "old", &offset).is_some(), "recoverable");
    }
}
