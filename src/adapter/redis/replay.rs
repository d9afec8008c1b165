//! What a namespace keeps for the sockets whose restore races with its
//! broadcasts: the recoverable packets delivered here lately (a restored
//! socket gets those later than what it read from the stream), and the
//! sockets restored lately (a packet they read from the stream that also
//! comes live is not delivered to them again). See `session::restore`.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use crate::adapter::{BroadcastOptions, EncodedPacket, SocketId};

/// Most packets kept.
const RECENT_PACKETS: usize = 4096;
/// How long a packet, or a restored socket, is kept.
const RECENT_WINDOW: Duration = Duration::from_secs(10);

/// A recoverable packet this server delivered.
struct Recent {
    order: u64,
    at: Instant,
    rooms: Vec<String>,
    except: Vec<String>,
    packet: EncodedPacket,
}

/// A socket restored here with the packets up to `through` (stream order)
/// read from the stream.
struct Replayed {
    id: SocketId,
    through: u64,
    at: Instant,
}

/// The recent packets and restored sockets of one namespace.
#[derive(Default)]
pub(super) struct Replay {
    recent: VecDeque<Recent>,
    replayed: Vec<Replayed>,
}

impl Replay {
    /// Keeps the recoverable packet at `order` (stream order), about to be
    /// delivered here; returns the sockets that must not get it, restored
    /// with it already.
    pub(super) fn remember(
        &mut self,
        order: u64,
        opts: &BroadcastOptions,
        packet: &EncodedPacket,
    ) -> Vec<SocketId> {
        let now = Instant::now();
        while self.recent.len() >= RECENT_PACKETS
            || self
                .recent
                .front()
                .is_some_and(|r| now.duration_since(r.at) > RECENT_WINDOW)
        {
            self.recent.pop_front();
        }
        self.recent.push_back(Recent {
            order,
            at: now,
            rooms: opts.rooms.clone(),
            except: opts.except.clone(),
            packet: packet.clone(),
        });
        if self.replayed.is_empty() {
            return Vec::new();
        }
        let skip = self
            .replayed
            .iter()
            .filter(|r| r.through >= order)
            .map(|r| r.id)
            .collect();
        // Packets come in stream order: none at or before `through` follows
        // one after it.
        self.replayed
            .retain(|r| r.through > order && now.duration_since(r.at) <= RECENT_WINDOW);
        skip
    }

    /// Socket `id` is restored with the packets up to `through` read from
    /// the stream: those that come here live too are not delivered to it.
    pub(super) fn replayed(&mut self, id: SocketId, through: u64) {
        let now = Instant::now();
        self.replayed
            .retain(|r| now.duration_since(r.at) <= RECENT_WINDOW);
        self.replayed.push(Replayed {
            id,
            through,
            at: now,
        });
    }

    /// Socket `id`, restored, is about to join its rooms: until
    /// [`Replay::joined`], no packet that comes live is delivered to it (it
    /// gets them from `joined` instead), so none comes twice or is lost to a
    /// delivery on another thread between its join and that call.
    pub(super) fn joining(&mut self, id: SocketId) {
        let now = Instant::now();
        match self.replayed.iter_mut().find(|r| r.id == id) {
            Some(r) => {
                r.through = u64::MAX;
                r.at = now;
            }
            None => self.replayed.push(Replayed {
                id,
                through: u64::MAX,
                at: now,
            }),
        }
    }

    /// Socket `id` (restored up to `horizon`) joined `rooms`: the packets kept
    /// since `horizon` for them, in stream order. Those that come live after
    /// this are delivered to it again.
    pub(super) fn joined(
        &mut self,
        id: SocketId,
        horizon: u64,
        rooms: &[String],
    ) -> Vec<EncodedPacket> {
        let missed = self.missed_after(horizon, rooms);
        let last = self.recent.back().map_or(horizon, |r| r.order.max(horizon));
        if let Some(r) = self.replayed.iter_mut().find(|r| r.id == id) {
            r.through = last;
        }
        missed
    }

    /// The packets kept that are later than `horizon` and reach a socket in
    /// `rooms`, in stream order.
    pub(super) fn missed_after(&self, horizon: u64, rooms: &[String]) -> Vec<EncodedPacket> {
        self.recent
            .iter()
            .filter(|r| r.order > horizon && crate::adapter::reaches(&r.rooms, &r.except, rooms))
            .map(|r| r.packet.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::{Frame, Sid};

    fn packet(n: u64) -> EncodedPacket {
        EncodedPacket(Arc::from(vec![Frame::Text(format!("{n}").into())]))
    }

    fn to(room: &str) -> BroadcastOptions {
        BroadcastOptions {
            rooms: vec![room.into()],
            ..Default::default()
        }
    }

    fn texts(packets: &[EncodedPacket]) -> Vec<String> {
        packets
            .iter()
            .map(|p| match &p.0[0] {
                Frame::Text(t) => t.to_string(),
                Frame::Binary(_) => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_packet_read_by_a_restore_is_not_delivered_live_to_its_socket_again() {
        let mut replay = Replay::default();
        let (a, b) = (Sid::random(), Sid::random());
        assert!(replay.remember(5, &to("r"), &packet(5)).is_empty());
        // `a` read the stream up to 7, `b` up to 8.
        replay.replayed(a, 7);
        replay.replayed(b, 8);
        assert_eq!(replay.remember(6, &to("r"), &packet(6)), [a, b]);
        assert_eq!(replay.remember(8, &to("r"), &packet(8)), [b]);
        assert!(replay.remember(9, &to("r"), &packet(9)).is_empty());
        assert!(replay.replayed.is_empty(), "none at or before 8 follows 9");
    }

    #[test]
    fn what_comes_live_while_a_restored_socket_joins_is_given_by_the_join_once() {
        let mut replay = Replay::default();
        let (a, b) = (Sid::random(), Sid::random());
        // `a` read the stream up to 5 at its restore.
        replay.remember(5, &to("r"), &packet(5));
        replay.replayed(a, 5);
        replay.joining(a);
        // Delivered live to others (on another thread, say) while `a` joins.
        assert_eq!(replay.remember(6, &to("r"), &packet(6)), [a]);
        assert_eq!(replay.remember(7, &to("s"), &packet(7)), [a]);
        assert_eq!(texts(&replay.joined(a, 5, &["r".into()])), ["6"]);
        // After the join it gets them live, and `b` never waited.
        assert!(replay.remember(8, &to("r"), &packet(8)).is_empty());
        replay.joining(b);
        assert_eq!(replay.remember(9, &to("r"), &packet(9)), [b]);
    }

    #[test]
    fn what_came_after_the_horizon_is_replayed_in_order_for_the_rooms() {
        let mut replay = Replay::default();
        for (n, room) in [(1, "r"), (2, "r"), (3, "s"), (4, "r")] {
            replay.remember(n, &to(room), &packet(n));
        }
        assert_eq!(texts(&replay.missed_after(1, &["r".into()])), ["2", "4"]);
        assert_eq!(texts(&replay.missed_after(4, &["r".into()])), [""; 0]);
    }
}
