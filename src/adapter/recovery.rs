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
    /// The socket it was written to straight (its own `emit`): a replay after
    /// that socket's restore leaves it out; the restore itself does not, as
    /// the client may have lost it with its transport.
    sent_to: Option<SocketId>,
    packet: EncodedPacket,
}

#[derive(Debug)]
pub(crate) struct RecoveryLog {
    config: RecoveryConfig,
    next: u64,
    packets: VecDeque<StoredPacket>,
    /// How many packets were ever stored: the log's position. Packets are
    /// stored at the back and dropped from the front only, so the one at
    /// index `i` is number `stored - packets.len() + 1 + i`.
    stored: u64,
    sessions: HashMap<Sid, (PersistedSession, Instant)>,
}

impl RecoveryLog {
    pub(crate) fn new(config: RecoveryConfig) -> RecoveryLog {
        RecoveryLog {
            config,
            // Offsets of an earlier process must never match this one's.
            next: rand::random::<u32>() as u64 * 1_000_000,
            packets: VecDeque::new(),
            stored: 0,
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
        self.push(
            offset,
            opts.rooms.clone(),
            opts.except.clone(),
            None,
            packet,
        );
    }

    /// Stores a packet of socket `id`'s own `emit` (as a packet to its own
    /// room, which it is), marked as sent to it when its connection took it.
    pub(crate) fn store_to_socket(
        &mut self,
        offset: &str,
        id: SocketId,
        written: bool,
        packet: &EncodedPacket,
    ) {
        let sent_to = written.then_some(id);
        self.push(offset, vec![id.to_string()], Vec::new(), sent_to, packet);
    }

    fn push(
        &mut self,
        offset: &str,
        rooms: Vec<String>,
        except: Vec<String>,
        sent_to: Option<SocketId>,
        packet: &EncodedPacket,
    ) {
        let Ok(offset) = offset.parse() else {
            return;
        };
        let now = Instant::now();
        self.expire(now);
        self.packets.push_back(StoredPacket {
            offset,
            emitted_at: now,
            rooms,
            except,
            sent_to,
            packet: packet.clone(),
        });
        self.stored += 1;
    }

    pub(crate) fn persist(&mut self, session: PersistedSession) {
        let now = Instant::now();
        self.expire(now);
        self.sessions.insert(session.pid, (session, now));
    }

    /// The session of `pid`, the packets of its rooms stored after `offset`,
    /// and the log's position they reach (see [`RecoveryLog::since`]).
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
        Some((session, missed, self.stored))
    }

    /// The packets stored after position `horizon` (a restore's) that reach
    /// a socket in `rooms`, but those written straight to socket `id`: it
    /// got them already. Packets dropped meanwhile (kept for
    /// `max_disconnection_duration` only) are lost to it.
    pub(crate) fn since(&self, horizon: u64, id: SocketId, rooms: &[String]) -> Vec<EncodedPacket> {
        let first = self.stored - self.packets.len() as u64 + 1;
        if horizon + 1 < first {
            tracing::warn!(
                target: "socket.io:adapter",
                %id,
                lost = first - horizon - 1,
                "packets stored while a recovered socket connected expired first"
            );
        }
        let skip = horizon.saturating_sub(first - 1);
        self.packets
            .iter()
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .filter(|p| p.sent_to != Some(id) && super::reaches(&p.rooms, &p.except, rooms))
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
        let (session, missed, _) = log.restore(pid.as_str(), &first).unwrap();
        assert_eq!(session.id, id);
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

    fn texts(packets: &[EncodedPacket]) -> Vec<Frame> {
        packets.iter().map(|p| p.0[0].clone()).collect()
    }

    #[test]
    fn since_a_restore_gives_what_reaches_its_rooms_but_what_was_sent_to_it() {
        let mut log = RecoveryLog::new(RecoveryConfig::default());
        let (id, pid, other) = (Sid::random(), Sid::random(), Sid::random());
        let first = log.next_offset();
        log.store(&first, &opts(&[]), &packet("first"));
        log.persist(PersistedSession {
            id,
            pid,
            rooms: vec!["r".into()],
            data: serde_json::Value::Null,
        });
        let o = log.next_offset();
        log.store(&o, &opts(&["r"]), &packet("away"));
        let (_, missed, horizon) = log.restore(pid.as_str(), &first).unwrap();
        assert_eq!(texts(&missed), [Frame::message("away")]);
        let own = id.to_string();
        for (text, rooms) in [("r", vec!["r"]), ("x", vec!["x"]), ("to-id", vec![&own])] {
            let o = log.next_offset();
            log.store(&o, &opts(&rooms), &packet(text));
        }
        let o = log.next_offset();
        log.store_to_socket(&o, id, true, &packet("straight"));
        let o = log.next_offset();
        log.store_to_socket(&o, other, true, &packet("to-other"));
        let rooms = [own, "r".to_string()];
        assert_eq!(
            texts(&log.since(horizon, id, &rooms)),
            [Frame::message("r"), Frame::message("to-id")]
        );
        assert!(log.since(log.stored, id, &rooms).is_empty());
    }

    #[test]
    fn since_counts_the_positions_of_expired_packets() {
        let mut log = RecoveryLog::new(RecoveryConfig {
            max_disconnection_duration: Duration::from_millis(0),
            skip_middlewares: false,
        });
        let (a, b) = (log.next_offset(), log.next_offset());
        log.store(&a, &opts(&[]), &packet("a"));
        std::thread::sleep(Duration::from_millis(2));
        log.store(&b, &opts(&[]), &packet("b"));
        let id = Sid::random();
        // "a" is gone: from position 0 only "b" is left (and a warning).
        assert_eq!(texts(&log.since(0, id, &[])), [Frame::message("b")]);
        assert_eq!(texts(&log.since(1, id, &[])), [Frame::message("b")]);
        assert!(log.since(2, id, &[]).is_empty());
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
