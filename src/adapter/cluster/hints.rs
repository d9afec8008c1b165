//! The interest hint table: one shared-memory array, created by the primary
//! and mapped by every worker, that tells a worker about to broadcast to rooms
//! which other processes may have members of them.
//!
//! Every live worker process owns one *lane* (a bit position), given by the
//! primary at its spawn: `2 × workers` lanes, so that the old and the new
//! process of one index during a reload own different ones. Each slot of the
//! table is a bitmask of lanes: the processes with at least one member of the
//! rooms whose (namespace, room) hash to it. A process keeps its own count per
//! slot (private) and sets its bit when that count goes from 0 to 1, *before*
//! the join that created the room returns; it clears the bit when the count
//! goes back to 0, only *after* it has reported the room gone to the primary.
//! So a bit is never missing for a process with members, and a join that
//! returned is seen by every emit it causes, on any worker, with no message in
//! between. A bit may be set too often (hash collisions): that only sends a
//! broadcast to a process that finds no recipient. One process owns a lane, so
//! the primary clears a dead process's whole column ([`HintTable::clear_lane`])
//! once it has exited, before the lane is given again: no count leaks.
//!
//! Beside the bitmasks, each lane has an *epoch*: the primary writes a fresh
//! one before it spawns a process on the lane, and 0 once that process is gone.
//! A worker's direct link to a lane (see [`super::direct`]) carries the epoch
//! it was made for, so a link to a dead process is never taken for a link to
//! its successor.
//!
//! A slot can also be *forced*: broadcasts to its rooms go through the
//! primary, whoever has members. A worker forces the rooms of a `socketsJoin`,
//! `socketsLeave` or `disconnectSockets` it sends through the primary, before
//! it sends it (its next broadcasts to them must not overtake it, and must
//! reach the sockets it adds); the primary ends that force once every worker
//! it relayed the operation to has handled it (see [`forced_by`] and
//! `Message::Fence`). Each slot keeps a count of the forces on it, so two
//! operations on one slot (or two rooms of one slot) each end only their own.
//!
//! The layout is fixed by [`LAYOUT`]: a header of 16 `u32` words (magic, layout,
//! slot count, disabled flag, lanes, words per slot), the epochs (one `u64` per
//! lane), the slots (`words` `u64` each), then the forces (one `u32` per
//! slot). The magic and the disabled flag stay where they are in every
//! layout: a process that finds another layout sets the flag, and then no
//! process skips the primary any more (it could not count its own rooms in).

use std::{
    os::fd::{AsFd, OwnedFd},
    sync::{
        atomic::{AtomicU32, AtomicU64, Ordering},
        Mutex,
    },
};

use rsio_ipc::Message;

use super::mapping::Mapping;

/// Slots in a table made by [`HintTable::create`].
pub const SLOTS: usize = 1 << 18;
/// The most `u64` words of lanes a slot may have (so a lane set lives on the
/// stack): 8 words, 512 lanes, for 256 workers.
pub const MAX_WORDS: usize = 8;
/// "rsih", little-endian.
const MAGIC: u32 = 0x6869_7372;
/// The layout and hash of this file; bumped on any change to either.
pub const LAYOUT: u32 = 3;
const HEADER_BYTES: usize = 64;
const H_MAGIC: usize = 0;
const H_LAYOUT: usize = 1;
const H_SLOTS: usize = 2;
const H_DISABLED: usize = 3;
const H_LANES: usize = 4;
const H_WORDS: usize = 5;

/// The header's words.
fn header(map: &Mapping) -> &[AtomicU32] {
    map.u32s(0, HEADER_BYTES / 4)
}

/// Why a hint table cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    /// A system call failed.
    #[error("hint table: {0}")]
    Sys(#[from] nix::Error),
    /// The table is not the layout this binary knows (it disabled it).
    #[error("hint table: layout {found} of {slots} slots, expected {LAYOUT} (magic {magic:#x}); interest hints disabled")]
    Layout {
        /// The magic word found.
        magic: u32,
        /// The layout found.
        found: u32,
        /// The slot count found.
        slots: u32,
    },
    /// The descriptor is smaller than its header says.
    #[error("hint table: {len} bytes, too small for its header")]
    Short {
        /// The descriptor's size.
        len: usize,
    },
    /// More lanes than a slot of [`MAX_WORDS`] words holds.
    #[error("hint table: {lanes} lanes do not fit in {MAX_WORDS} words per slot")]
    TooManyLanes {
        /// The lanes asked for.
        lanes: usize,
    },
    /// A process was given a lane the table does not have.
    #[error("hint table: lane {lane} of {lanes}")]
    NoSuchLane {
        /// The lane given.
        lane: usize,
        /// The table's lanes.
        lanes: usize,
    },
}

/// A set of lanes, on the stack.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneSet {
    words: [u64; MAX_WORDS],
}

impl LaneSet {
    /// Adds `lane`.
    pub fn insert(&mut self, lane: usize) {
        self.words[lane / 64] |= 1 << (lane % 64);
    }

    /// Takes `lane` out.
    pub fn remove(&mut self, lane: usize) {
        self.words[lane / 64] &= !(1 << (lane % 64));
    }

    /// Whether `lane` is in.
    pub fn contains(&self, lane: usize) -> bool {
        self.words
            .get(lane / 64)
            .is_some_and(|w| w & (1 << (lane % 64)) != 0)
    }

    /// How many lanes are in.
    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether no lane is in.
    pub fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    /// The lanes in, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &word)| {
            let mut w = word;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros() as usize;
                w &= w - 1;
                Some(i * 64 + bit)
            })
        })
    }
}

/// The shared table, as the primary creates it and each worker maps it.
pub struct HintTable {
    map: Mapping,
    slots: usize,
    lanes: usize,
    words: usize,
}

impl std::fmt::Debug for HintTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HintTable")
            .field("slots", &self.slots)
            .field("lanes", &self.lanes)
            .finish_non_exhaustive()
    }
}

/// `u64` words a slot of `lanes` lanes takes.
fn words_for(lanes: usize) -> usize {
    lanes.div_ceil(64)
}

/// Where the forces begin: after the header, the epochs and the slots.
fn forces_at(slots: usize, lanes: usize) -> usize {
    HEADER_BYTES + 8 * lanes + 8 * slots * words_for(lanes)
}

fn table_len(slots: usize, lanes: usize) -> usize {
    forces_at(slots, lanes) + 4 * slots
}

impl HintTable {
    /// A new table of `lanes` lanes in a memfd (its descriptor to pass to the workers).
    pub fn create(lanes: usize) -> Result<(HintTable, OwnedFd), HintError> {
        Self::create_with(SLOTS, lanes)
    }

    pub(crate) fn create_with(
        slots: usize,
        lanes: usize,
    ) -> Result<(HintTable, OwnedFd), HintError> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let words = words_for(lanes);
        if lanes == 0 || words > MAX_WORDS {
            return Err(HintError::TooManyLanes { lanes });
        }
        let fd = memfd_create(c"rsio-interest-hints", MFdFlags::MFD_CLOEXEC)?;
        let len = table_len(slots, lanes);
        nix::unistd::ftruncate(&fd, len as i64)?;
        let map = Mapping::shared(&fd, len)?;
        let header = header(&map);
        header[H_LAYOUT].store(LAYOUT, Ordering::Relaxed);
        header[H_SLOTS].store(slots as u32, Ordering::Relaxed);
        header[H_LANES].store(lanes as u32, Ordering::Relaxed);
        header[H_WORDS].store(words as u32, Ordering::Relaxed);
        // Last: a table with its magic is complete.
        header[H_MAGIC].store(MAGIC, Ordering::Release);
        Ok((
            HintTable {
                map,
                slots,
                lanes,
                words,
            },
            fd,
        ))
    }

    /// Maps the table on `fd`; one of another layout is disabled for all.
    pub fn open(fd: impl AsFd) -> Result<HintTable, HintError> {
        let len = nix::sys::stat::fstat(fd.as_fd())?.st_size as usize;
        if len < HEADER_BYTES {
            return Err(HintError::Short { len });
        }
        let map = Mapping::shared(fd, len)?;
        let header = header(&map);
        let magic = header[H_MAGIC].load(Ordering::Acquire);
        let found = header[H_LAYOUT].load(Ordering::Relaxed);
        let slots = header[H_SLOTS].load(Ordering::Relaxed);
        let lanes = header[H_LANES].load(Ordering::Relaxed) as usize;
        let words = header[H_WORDS].load(Ordering::Relaxed) as usize;
        let fits = magic == MAGIC
            && found == LAYOUT
            && slots != 0
            && lanes != 0
            && words == words_for(lanes)
            && words <= MAX_WORDS
            && table_len(slots as usize, lanes) <= len;
        if !fits {
            if magic == MAGIC {
                header[H_DISABLED].store(1, Ordering::SeqCst);
            }
            return Err(HintError::Layout {
                magic,
                found,
                slots,
            });
        }
        Ok(HintTable {
            map,
            slots: slots as usize,
            lanes,
            words,
        })
    }

    /// The lanes of this table.
    pub fn lanes(&self) -> usize {
        self.lanes
    }

    /// Disables the table for every process (one that cannot count its rooms
    /// in): every broadcast then goes through the primary.
    pub fn disable(&self) {
        header(&self.map)[H_DISABLED].store(1, Ordering::SeqCst);
    }

    /// Disables the table on `fd` for every process without mapping it: for
    /// a process whose [`HintTable::open`] failed (it cannot count its rooms
    /// in, so no other process may trust the table). Writes the header's
    /// flag through the descriptor; the other processes' mappings share the
    /// same pages.
    pub fn disable_fd(fd: impl AsFd) -> Result<(), HintError> {
        let flag = 1u32.to_ne_bytes();
        let written = nix::sys::uio::pwrite(fd, &flag, (H_DISABLED * 4) as i64)?;
        if written != flag.len() {
            return Err(HintError::Short { len: written });
        }
        Ok(())
    }

    /// Whether some process disabled the table.
    pub fn disabled(&self) -> bool {
        header(&self.map)[H_DISABLED].load(Ordering::SeqCst) != 0
    }

    /// The slot of `(nsp, room)`.
    pub fn slot(&self, nsp: &str, room: &str) -> usize {
        (hash(nsp, room) % self.slots as u64) as usize
    }

    /// The slot standing for every socket of `nsp` (only ever forced).
    pub fn everyone(&self, nsp: &str) -> usize {
        (hash_everyone(nsp) % self.slots as u64) as usize
    }

    fn epochs(&self) -> &[AtomicU64] {
        self.map.u64s(HEADER_BYTES, self.lanes)
    }

    /// The words of `slot`.
    fn words(&self, slot: usize) -> &[AtomicU64] {
        let at = HEADER_BYTES + 8 * self.lanes + 8 * slot * self.words;
        self.map.u64s(at, self.words)
    }

    /// The epoch of the process on `lane` (0: none).
    pub fn epoch(&self, lane: usize) -> u64 {
        self.epochs()[lane].load(Ordering::SeqCst)
    }

    /// Sets the epoch of `lane` (the primary, before it spawns a process on it).
    pub fn set_epoch(&self, lane: usize, epoch: u64) {
        self.epochs()[lane].store(epoch, Ordering::SeqCst);
    }

    fn set_bit(&self, slot: usize, bit: usize) {
        self.words(slot)[bit / 64].fetch_or(1 << (bit % 64), Ordering::SeqCst);
    }

    fn clear_bit(&self, slot: usize, bit: usize) {
        self.words(slot)[bit / 64].fetch_and(!(1 << (bit % 64)), Ordering::SeqCst);
    }

    fn has_bit(&self, slot: usize, bit: usize) -> bool {
        self.words(slot)[bit / 64].load(Ordering::SeqCst) & (1 << (bit % 64)) != 0
    }

    /// The count of forces on `slot`.
    fn force_count(&self, slot: usize) -> &AtomicU32 {
        &self
            .map
            .u32s(forces_at(self.slots, self.lanes) + 4 * slot, 1)[0]
    }

    /// Whether `slot` is forced through the primary.
    pub fn forced(&self, slot: usize) -> bool {
        self.force_count(slot).load(Ordering::SeqCst) != 0
    }

    /// The slots an operation on `rooms` of `nsp` forces (none: the slot of
    /// every socket), one per room: the same list for [`HintTable::force`]
    /// and [`HintTable::release`].
    pub fn forced_slots<S: AsRef<str>>(&self, nsp: &str, rooms: &[S]) -> Vec<usize> {
        if rooms.is_empty() {
            return vec![self.everyone(nsp)];
        }
        rooms.iter().map(|r| self.slot(nsp, r.as_ref())).collect()
    }

    /// Adds a force to each of `slots`: broadcasts to their rooms go through
    /// the primary until it is released.
    pub fn force(&self, slots: &[usize]) {
        for &slot in slots {
            self.force_count(slot).fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Takes one force off each of `slots` (never below none: a release
    /// without its force, from a process that could not count, ends nothing
    /// of another's for good).
    pub fn release(&self, slots: &[usize]) {
        for &slot in slots {
            let _ = self
                .force_count(slot)
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        }
    }

    /// Adds the lanes of `slot` to `set`.
    fn or_into(&self, slot: usize, set: &mut LaneSet) {
        for (out, word) in set.words.iter_mut().zip(self.words(slot)) {
            *out |= word.load(Ordering::SeqCst);
        }
    }

    /// The lanes with members of any of `rooms` of `nsp` (the primary's view,
    /// to route what it reads on Redis); `None` when any process may have
    /// some: the table disabled, no room (every socket), a room forced, or a
    /// room shaped like a socket id (not counted).
    pub fn lanes_of<S: AsRef<str>>(&self, nsp: &str, rooms: &[S]) -> Option<LaneSet> {
        if self.disabled() || rooms.is_empty() {
            return None;
        }
        let mut set = LaneSet::default();
        for room in rooms {
            let room = room.as_ref();
            if crate::engine::Sid::parse(room).is_some() {
                return None;
            }
            let slot = self.slot(nsp, room);
            if self.forced(slot) {
                return None;
            }
            self.or_into(slot, &mut set);
        }
        Some(set)
    }

    /// Clears `lane` in every slot and its epoch: its process has exited (the
    /// primary, before it gives the lane again).
    pub fn clear_lane(&self, lane: usize) {
        self.set_epoch(lane, 0);
        for slot in 0..self.slots {
            // Load first: an untouched word stays untouched.
            if self.has_bit(slot, lane) {
                self.clear_bit(slot, lane);
            }
        }
    }

    /// Whether `lane` is set in `slot`.
    #[cfg(test)]
    pub fn has_lane(&self, slot: usize, lane: usize) -> bool {
        self.has_bit(slot, lane)
    }
}

/// The worker whose process owns `lane` in a table of `lanes` lanes: two
/// lanes a worker index (`w` and `workers + w`, see `crate::cluster::lanes`),
/// so that a reload's old and new process differ.
pub fn worker_of_lane(lane: usize, lanes: usize) -> usize {
    lane % (lanes / 2).max(1)
}

/// The two lanes the processes of `worker` get (see [`worker_of_lane`]).
pub fn lanes_of_worker(worker: usize, lanes: usize) -> [usize; 2] {
    [worker, (lanes / 2).max(1) + worker]
}

/// A fixed hash of (namespace, room), the same in every process and release of
/// one [`LAYOUT`]: FNV-1a over the namespace, a 0xff separator (never in
/// UTF-8) and the room, then a final mix so that the low bits spread.
pub fn hash(nsp: &str, room: &str) -> u64 {
    mix(fnv(nsp, 0xff, room.as_bytes()))
}

/// The hash of "every socket of `nsp`": as [`hash`], with a 0xfe separator
/// and no room, so it is no room's.
pub fn hash_everyone(nsp: &str) -> u64 {
    mix(fnv(nsp, 0xfe, &[]))
}

fn fnv(nsp: &str, separator: u8, room: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in nsp.as_bytes().iter().chain(&[separator]).chain(room) {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    h
}

/// splitmix64's finaliser.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The rooms of `nsp` that `message` forces through the primary while it is
/// on its way (none: every socket of `nsp`), or `None` when it forces none:
/// the joined rooms of a `SocketsJoin` (what the joiner sends them next must
/// reach the sockets it adds), the left rooms of a `SocketsLeave` and the
/// target rooms of a `DisconnectSockets` (what the sender sends them next
/// must not overtake it). The worker that sends it forces these, and the
/// primary releases them once every worker it relayed the operation to has
/// handled it: both read them here, so each release matches its force.
pub fn forced_by(message: &Message) -> Option<(&str, &[String])> {
    match message {
        Message::SocketsJoin { nsp, rooms, .. } => Some((nsp, rooms)),
        Message::SocketsLeave { nsp, rooms, .. } if !rooms.is_empty() => Some((nsp, rooms)),
        Message::DisconnectSockets { nsp, target, .. } => Some((nsp, &target.rooms)),
        _ => None,
    }
}

/// Where a broadcast of this process must go, by the hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Through the primary: the table is disabled, or a room is forced.
    Primary,
    /// Straight to the processes of these lanes (this one's left out; none:
    /// the broadcast stays here).
    Lanes(LaneSet),
}

/// One worker process's use of the table: its lane, and its own count of
/// members per slot (private), from which it sets and clears its lane's bits.
pub struct Hints {
    table: HintTable,
    lane: usize,
    own: Mapping,
    /// Held over a count's change and its bit's: a room appearing and another
    /// of the same slot going, on two threads, never leave the bit cleared
    /// under a count above 0. Room changes only, never a broadcast.
    transitions: Mutex<()>,
}

impl std::fmt::Debug for Hints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hints")
            .field("table", &self.table)
            .field("lane", &self.lane)
            .finish_non_exhaustive()
    }
}

impl Hints {
    /// The view of `table` of the process on `lane`.
    pub fn new(table: HintTable, lane: usize) -> Result<Hints, HintError> {
        if lane >= table.lanes {
            return Err(HintError::NoSuchLane {
                lane,
                lanes: table.lanes,
            });
        }
        let own = Mapping::private(table.slots * 4)?;
        Ok(Hints {
            table,
            lane,
            own,
            transitions: Mutex::new(()),
        })
    }

    /// The table.
    pub fn table(&self) -> &HintTable {
        &self.table
    }

    fn own(&self, slot: usize) -> &AtomicU32 {
        &self.own.u32s(slot * 4, 1)[0]
    }

    fn transitions(&self) -> std::sync::MutexGuard<'_, ()> {
        self.transitions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first member of `room` joined here: sets this lane's bit, before the
    /// join returns.
    pub fn appeared(&self, nsp: &str, room: &str) {
        let slot = self.table.slot(nsp, room);
        let _t = self.transitions();
        if self.own(slot).fetch_add(1, Ordering::SeqCst) == 0 {
            self.table.set_bit(slot, self.lane);
        }
    }

    /// The last member of `room` left here, and the primary was told so.
    pub fn gone(&self, nsp: &str, room: &str) {
        let slot = self.table.slot(nsp, room);
        let _t = self.transitions();
        let own = self.own(slot);
        match own.load(Ordering::SeqCst) {
            0 => {}
            1 => {
                own.store(0, Ordering::SeqCst);
                self.table.clear_bit(slot, self.lane);
            }
            _ => {
                own.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    /// Where a broadcast to `rooms` of `nsp` (none: every socket) must go. A
    /// room shaped like a socket id (not counted) may be on any lane.
    pub fn reach(&self, nsp: &str, rooms: &[String]) -> Reach {
        if self.table.disabled() {
            return Reach::Primary;
        }
        let mut set = LaneSet::default();
        let mut everywhere = rooms.is_empty();
        if everywhere && self.table.forced(self.table.everyone(nsp)) {
            return Reach::Primary;
        }
        for room in rooms {
            if crate::engine::Sid::parse(room).is_some() {
                everywhere = true;
                continue;
            }
            let slot = self.table.slot(nsp, room);
            if self.table.forced(slot) {
                return Reach::Primary;
            }
            self.table.or_into(slot, &mut set);
        }
        if everywhere {
            for lane in 0..self.table.lanes {
                set.insert(lane);
            }
        }
        set.remove(self.lane);
        Reach::Lanes(set)
    }

    /// Whether a broadcast to `rooms` of `nsp` has no recipient outside this
    /// process: named rooms only, each of which no other process has, none
    /// forced, and the table in use (what [`Hints::reach`] tells as an empty
    /// set of lanes; for tests).
    #[cfg(test)]
    pub fn alone(&self, nsp: &str, rooms: &[String]) -> bool {
        !rooms.is_empty() && matches!(self.reach(nsp, rooms), Reach::Lanes(s) if s.is_empty())
    }
}

#[cfg(test)]
#[path = "hints_tests.rs"]
mod tests;
