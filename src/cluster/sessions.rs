//! Connection state recovery across workers, kept by the primary: one offset
//! sequence for the whole cluster, the log of recoverable packets, and the
//! sessions of recoverable sockets (which outlive the worker that held them).

use std::{
    collections::{HashMap, VecDeque},
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

struct Kept {
    session: Session,
    worker: usize,
    /// `None` while the socket is connected.
    disconnected_at: Option<Instant>,
}

pub(crate) struct SessionStore {
    max: Duration,
    next: u64,
    log: VecDeque<Logged>,
    sessions: HashMap<String, Kept>,
}

impl SessionStore {
    pub(crate) fn new() -> SessionStore {
        SessionStore {
            max: Duration::ZERO,
            // Offsets of an earlier primary must never match this one's.
            next: u64::from(rand::random::<u32>()) * 1_000_000,
            log: VecDeque::new(),
            sessions: HashMap::new(),
        }
    }

    /// Recovery is on somewhere: keep packets and sessions at least this long.
    pub(crate) fn enable(&mut self, max: Duration) {
        self.max = self.max.max(max);
    }

    fn expire(&mut self, now: Instant) {
        let max = self.max;
        while self
            .log
            .front()
            .is_some_and(|p| now.duration_since(p.at) > max)
        {
            self.log.pop_front();
        }
        self.sessions.retain(|_, k| {
            k.disconnected_at
                .is_none_or(|at| now.duration_since(at) <= max)
        });
    }

    /// Gives a broadcast the next offset, appended as its last argument, and logs it.
    /// `false` when the packet cannot carry one (then it is relayed as it is).
    pub(crate) fn sequence(&mut self, b: &mut Broadcast) -> bool {
        let Some(Frame::Text(text)) = b.frames.first() else {
            return false;
        };
        if text.last() != Some(&b']') {
            return false;
        }
        self.next += 1;
        let offset = self.next;
        let mut spliced = BytesMut::with_capacity(text.len() + 24);
        spliced.put_slice(&text[..text.len() - 1]);
        spliced.put_slice(format!(",\"{offset}\"]").as_bytes());
        b.frames[0] = Frame::Text(Bytes::from(spliced));
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

    pub(crate) fn update(&mut self, worker: usize, session: Session) {
        self.sessions.insert(
            session.pid.clone(),
            Kept {
                session,
                worker,
                disconnected_at: None,
            },
        );
    }

    pub(crate) fn closed(&mut self, pid: &str, recoverable: bool) {
        if !recoverable {
            self.sessions.remove(pid);
        } else if let Some(k) = self.sessions.get_mut(pid) {
            k.disconnected_at.get_or_insert_with(Instant::now);
        }
        self.expire(Instant::now());
    }

    /// A worker died: its connected sockets count as disconnected from now.
    pub(crate) fn worker_gone(&mut self, worker: usize) {
        let now = Instant::now();
        for k in self.sessions.values_mut() {
            if k.worker == worker {
                k.disconnected_at.get_or_insert(now);
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
        if kept.disconnected_at.is_none() || kept.session.nsp != nsp {
            return None;
        }
        let session = self.sessions.remove(pid)?.session;
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
}
