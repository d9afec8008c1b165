//! Room interest: what a namespace's rooms tell the cluster's interest hints
//! (a room appearing or going here), and the hold a session being restored
//! keeps on its rooms until its socket joined them.

use super::SocketId;

/// Whether interest in `room` is reported: not for rooms named like a socket
/// id, which the primary sends everywhere (every socket has its own).
pub(crate) fn tracked(room: &str) -> bool {
    SocketId::parse(room).is_none()
}

/// What the interest sink is told about a named room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoomPresence {
    /// It got its first member here.
    Appeared,
    /// It lost its last member here.
    Gone,
    /// No change: whether it has members here now (a confirmation the
    /// primary waits for after a restore or a relayed join).
    Confirmed(bool),
    /// Counted in the hints without a member here, and reported to nobody: a
    /// session being restored holds its rooms (see [`RoomHold`]).
    Held,
    /// The end of one [`RoomPresence::Held`].
    Released,
}

/// Told, under the index lock, when a named room gets its first member or
/// loses its last one: the cluster adapter reports it to the primary, in the
/// same order as the changes happened.
pub(crate) type InterestSink = Box<dyn Fn(&str, RoomPresence) + Send + Sync>;

/// Rooms of a session being restored, counted in this process's interest
/// hints as if it had members of them, from before the restore reads what
/// the session missed until the hold is dropped (once its socket joined
/// them, or the restore came to nothing). With `--redis`, the host's primary
/// so forwards this worker every broadcast to those rooms that it reads
/// while the restore is under way.
///
/// The hold counts apart from the rooms' members: each room it holds is
/// counted in once and out once, whatever the socket joins or leaves.
pub struct RoomHold {
    sink: InterestSink,
    rooms: Vec<String>,
}

impl std::fmt::Debug for RoomHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomHold")
            .field("rooms", &self.rooms)
            .finish_non_exhaustive()
    }
}

impl RoomHold {
    /// Holds `rooms` (but those named like a socket id, never counted) in
    /// `sink` now.
    pub(crate) fn new(sink: InterestSink, rooms: &[String]) -> RoomHold {
        let rooms: Vec<String> = rooms.iter().filter(|r| tracked(r)).cloned().collect();
        for room in &rooms {
            sink(room, RoomPresence::Held);
        }
        RoomHold { sink, rooms }
    }
}

impl Drop for RoomHold {
    fn drop(&mut self) {
        for room in &self.rooms {
            (self.sink)(room, RoomPresence::Released);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::engine::Sid;

    #[test]
    fn a_hold_counts_each_named_room_in_once_and_out_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let id = Sid::random().to_string();
        let hold = RoomHold::new(
            Box::new(move |room: &str, p: RoomPresence| {
                sink.lock().unwrap().push((room.to_string(), p))
            }),
            &["a".into(), id, "b".into()],
        );
        use RoomPresence::*;
        let got = |seen: &Mutex<Vec<(String, RoomPresence)>>| seen.lock().unwrap().clone();
        assert_eq!(got(&seen), [("a".into(), Held), ("b".into(), Held)]);
        drop(hold);
        assert_eq!(
            got(&seen)[2..],
            [("a".into(), Released), ("b".into(), Released)]
        );
    }
}
