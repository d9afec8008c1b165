//! Connection state recovery for one process: sessions kept after a recoverable
//! disconnect, and the log of packets they may have missed.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use super::{BroadcastOptions, EncodedPacket, SocketId};
use crate::engine::Sid;

/// Node's `connectionStateRecovery` option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryConfig {
    /// How long a disconnected session (and the packets it misses) is kept.
    pub max_disconnection_duration: Duration,
    /// A recovered socket skips the namespace middlewares.
    pub skip_middlewares: bool,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            max_disconnection_duration: Duration::from_millis(120_000),
            skip_middlewares: true,
        }
    }
}

/// What a socket leaves behind on a recoverable disconnect.
#[derive(Debug, Clone)]
pub struct PersistedSession {
    /// The socket's id, kept by the restored socket.
    pub id: SocketId,
    /// The private id the client presents to recover.
    pub pid: Sid,
    /// Its rooms but its own id room.
    pub rooms: Vec<String>,
    /// Its `socket.data`.
    pub data: serde_json::Value,
}

#[derive(Debug)]
struct StoredPacket {
    offset: u64,
    emitted_at: Instant,
    rooms: Vec<String>,
    except: Vec<String>,
    packet: EncodedPacket,
}

#[derive(Debug)]
pub(crate) struct RecoveryLog {
    config: RecoveryConfig,
    next: u64,
    packets: VecDeque<StoredPacket>,
    sessions: HashMap<Sid, (PersistedSession, Instant)>,
}

impl RecoveryLog {
    pub(crate) fn new(config: RecoveryConfig) -> RecoveryLog {
        RecoveryLog {
            config,
            // Offsets of an earlier process must never match this one's.
            next: rand::random::<u32>() as u64 * 1_000_000,
            packets: VecDeque::new(),
            sessions: HashMap::new(),
        }
    }

    pub(crate) fn next_offset(&mut self) -> String {
        self.next += 1;
        self.next.to_string()
    }

    fn expire(&mut self, now: Instant) {
        let max = self.config.max_disconnection_duration;
        while self
            .packets
            .front()
            .is_some_and(|p| now.duration_since(p.emitted_at) > max)
        {
            self.packets.pop_front();
        }
        self.sessions
            .retain(|_, (_, at)| now.duration_since(*at) <= max);
    }

    pub(crate) fn store(&mut self, offset: &str, opts: &BroadcastOptions, packet: &EncodedPacket) {
        let Ok(offset) = offset.parse() else {
            return;
        };
        let now = Instant::now();
        self.expire(now);
        self.packets.push_back(StoredPacket {
            offset,
            emitted_at: now,
            rooms: opts.rooms.clone(),
            except: opts.except.clone(),
            packet: packet.clone(),
        });
    }

    pub(crate) fn persist(&mut self, session: PersistedSession) {
        let now = Instant::now();
        self.expire(now);
        self.sessions.insert(session.pid, (session, now));
    }

    /// The session of `pid`, the packets of its rooms after `offset`, and the
    /// last offset those cover (the horizon of [`RecoveryLog::between`]).
    pub(crate) fn restore(
        &mut self,
        pid: &str,
        offset: &str,
    ) -> Option<(PersistedSession, Vec<EncodedPacket>, u64)> {
        self.expire(Instant::now());
        let pid = Sid::parse(pid)?;
        let offset: u64 = offset.parse().ok()?;
        let (session, _) = self.sessions.remove(&pid)?;
        // The offset must still be in the log, or packets may have been lost.
        let start = self.packets.partition_point(|p| p.offset < offset);
        if self.packets.get(start).map(|p| p.offset) != Some(offset) {
            return None;
        }
        let mut rooms = session.rooms.clone();
        rooms.push(session.id.to_string());
        let missed = self
            .packets
            .iter()
            .skip(start + 1)
            .filter(|p| super::reaches(&p.rooms, &p.except, &rooms))
            .map(|p| p.packet.clone())
            .collect();
        Some((session, missed, self.last_offset()))
    }

    /// The offset of the last packet stored (0: none).
    pub(crate) fn last_offset(&self) -> u64 {
        self.packets.back().map_or(0, |p| p.offset)
    }

    /// The packets stored after `horizon` and up to `upto` that reach `rooms`,
    /// in order: what a restored socket missed between its restore and its
    /// join (see `LocalAdapter::join_restored`).
    pub(crate) fn between(&self, horizon: u64, upto: u64, rooms: &[String]) -> Vec<EncodedPacket> {
        let start = self.packets.partition_point(|p| p.offset <= horizon);
        self.packets
            .iter()
            .skip(start)
            .take_while(|p| p.offset <= upto)
            .filter(|p| super::reaches(&p.rooms, &p.except, rooms))
            .map(|p| p.packet.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Frame;
    use std::sync::Arc;

    fn packet(text: &str) -> EncodedPacket {
        EncodedPacket(Arc::from(vec![Frame::message(text)]))
    }

    fn opts(rooms: &[&str]) -> BroadcastOptions {
        BroadcastOptions {
            rooms: rooms.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn restores_missed_packets_of_its_rooms() {
        let mut log = RecoveryLog::new(RecoveryConfig::default());
        let (id, pid) = (Sid::random(), Sid::random());
        let first = log.next_offset();
        log.store(&first, &opts(&[]), &packet("first"));
        log.persist(PersistedSession {
            id,
            pid,
            rooms: vec!["r".into()],
            data: serde_json::json!({"a": 1}),
        });
        for (text, rooms) in [
            ("all", vec![]),
            ("r", vec!["r"]),
            ("other", vec!["x"]),
            ("mine", vec![]),
        ] {
            let o = log.next_offset();
            let rooms: Vec<&str> = rooms;
            let target = if text == "mine" {
                vec![id.to_string()]
            } else {
                rooms.iter().map(|s| s.to_string()).collect()
            };
            log.store(
                &o,
                &BroadcastOptions {
                    rooms: target,
                    ..Default::default()
                },
                &packet(text),
            );
        }
        let (session, missed, horizon) = log.restore(pid.as_str(), &first).unwrap();
        assert_eq!(session.id, id);
        assert_eq!(horizon, log.last_offset(), "it covers the whole log");
        let texts: Vec<_> = missed.iter().map(|p| p.0[0].clone()).collect();
        assert_eq!(
            texts,
            vec![
                Frame::message("all"),
                Frame::message("r"),
                Frame::message("mine")
            ]
        );
        assert!(
            log.restore(pid.as_str(), &first).is_none(),
            "a session is restored once"
        );
    }

    #[test]
    fn between_gives_what_came_after_the_horizon_up_to_the_join_for_the_rooms() {
        let mut log = RecoveryLog::new(RecoveryConfig::default());
        let mut offsets = Vec::new();
        for room in ["r", "r", "s", "r", "r"] {
            let o = log.next_offset();
            log.store(&o, &opts(&[room]), &packet(&format!("{room}{o}")));
            offsets.push(o.parse::<u64>().unwrap());
        }
        let texts = |from: u64, upto: u64| -> Vec<Frame> {
            log.between(from, upto, &["r".to_string()])
                .iter()
                .map(|p| p.0[0].clone())
                .collect()
        };
        // After the 2nd, up to the 4th: the 3rd is another room's.
        assert_eq!(
            texts(offsets[1], offsets[3]),
            vec![Frame::message(&format!("r{}", offsets[3]))]
        );
        assert!(
            texts(offsets[4], offsets[4]).is_empty(),
            "nothing after the last"
        );
        assert_eq!(texts(offsets[0], offsets[4]).len(), 3);
    }

    #[test]
    fn unknown_offset_or_expired_session_fails() {
        let mut log = RecoveryLog::new(RecoveryConfig {
            max_disconnection_duration: Duration::from_millis(0),
            skip_middlewares: true,
        });
        let pid = Sid::random();
        log.persist(PersistedSession {
            id: Sid::random(),
            pid,
            rooms: vec![],
            data: serde_json::Value::Null,
        });
        std::thread::sleep(Duration::from_millis(2));
        assert!(log.restore(pid.as_str(), "1").is_none());
        assert!(log.restore("bad", "x").is_none());
    }
}
