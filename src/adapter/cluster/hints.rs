//! The interest hint table: one shared-memory array of counters, created by the
//! primary and mapped by every worker, that tells a worker about to relay a
//! room broadcast whether any other process may have members of its rooms.
//!
//! Each counter is the number of worker processes with at least one member of
//! the rooms whose (namespace, room) hash to it. A worker adds itself *before*
//! the join that created its room returns, and takes itself out only *after* it
//! has reported the room gone to the primary; so a counter never counts fewer
//! processes than have members, and a join that returned is seen by every
//! emit it causes, on any worker, with no message in between (the primary,
//! which learns rooms from its sockets, cannot promise that to a worker). A
//! counter may count too many (hash collisions, a process killed between its
//! two steps, a [`FORCED`] slot): that only sends a broadcast through the
//! primary, which has the exact view.
//!
//! The layout is fixed by [`LAYOUT`]: a header of 16 words (magic, layout,
//! slot count, disabled flag) and the counters. The magic and the disabled flag
//! stay where they are in every layout: a process that finds another layout
//! sets the flag, and then no process skips the primary any more (it could not
//! count its own rooms in).

use std::{
    num::NonZeroUsize,
    os::fd::{AsFd, OwnedFd},
    ptr::NonNull,
    sync::atomic::{AtomicU32, Ordering},
};

use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};

/// Counters in a table made by [`HintTable::create`].
pub const SLOTS: usize = 1 << 20;
/// "rsih", little-endian.
const MAGIC: u32 = 0x6869_7372;
/// The layout and hash of this file; bumped on any change to either.
pub const LAYOUT: u32 = 1;
const HEADER_WORDS: usize = 16;
const H_MAGIC: usize = 0;
const H_LAYOUT: usize = 1;
const H_SLOTS: usize = 2;
const H_DISABLED: usize = 3;
/// Set, never cleared, on the counter of a room a worker joined sockets of
/// other workers to (`sockets_join` relayed): it cannot know where they are.
pub const FORCED: u32 = 1 << 31;

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
}

/// A memory mapping of `len` bytes, unmapped on drop.
struct Mapping {
    ptr: NonNull<AtomicU32>,
    len: usize,
}

// SAFETY: the mapping is only accessed through atomics.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    fn shared(fd: impl AsFd, len: usize) -> Result<Mapping, HintError> {
        let size = NonZeroUsize::new(len).ok_or(HintError::Short { len })?;
        // SAFETY: a fresh mapping of our own descriptor; nothing else aliases it
        // in this process but through atomics.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                fd,
                0,
            )?
        };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    /// Zeroed private memory, committed page by page as it is touched.
    fn private(len: usize) -> Result<Mapping, HintError> {
        let size = NonZeroUsize::new(len).ok_or(HintError::Short { len })?;
        // SAFETY: a fresh anonymous mapping.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE,
            )?
        };
        Ok(Mapping {
            ptr: ptr.cast(),
            len,
        })
    }

    fn words(&self) -> &[AtomicU32] {
        // SAFETY: `len` bytes mapped read-write at `ptr`, page-aligned, for the
        // life of `self`; AtomicU32 has the layout of u32.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len / 4) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping; no reference to it outlives `self`.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}

/// The shared table, as the primary creates it and each worker maps it.
pub struct HintTable {
    map: Mapping,
}

impl std::fmt::Debug for HintTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HintTable")
            .field("slots", &self.slots())
            .finish_non_exhaustive()
    }
}

impl HintTable {
    /// A new table in a memfd (its descriptor to pass to the workers).
    pub fn create() -> Result<(HintTable, OwnedFd), HintError> {
        Self::create_with(SLOTS)
    }

    pub(crate) fn create_with(slots: usize) -> Result<(HintTable, OwnedFd), HintError> {
        use nix::sys::memfd::{memfd_create, MFdFlags};
        let fd = memfd_create(c"rsio-interest-hints", MFdFlags::MFD_CLOEXEC)?;
        let len = (HEADER_WORDS + slots) * 4;
        nix::unistd::ftruncate(&fd, len as i64)?;
        let map = Mapping::shared(&fd, len)?;
        let words = map.words();
        words[H_LAYOUT].store(LAYOUT, Ordering::Relaxed);
        words[H_SLOTS].store(slots as u32, Ordering::Relaxed);
        // Last: a table with its magic is complete.
        words[H_MAGIC].store(MAGIC, Ordering::Release);
        Ok((HintTable { map }, fd))
    }

    /// Maps the table on `fd`; one of another layout is disabled for all.
    pub fn open(fd: impl AsFd) -> Result<HintTable, HintError> {
        let len = nix::sys::stat::fstat(fd.as_fd())?.st_size as usize;
        if len < HEADER_WORDS * 4 {
            return Err(HintError::Short { len });
        }
        let map = Mapping::shared(fd, len)?;
        let words = map.words();
        let magic = words[H_MAGIC].load(Ordering::Acquire);
        let found = words[H_LAYOUT].load(Ordering::Relaxed);
        let slots = words[H_SLOTS].load(Ordering::Relaxed);
        let fits = (HEADER_WORDS + slots as usize) * 4 <= len;
        if magic != MAGIC || found != LAYOUT || slots == 0 || !fits {
            if magic == MAGIC {
                words[H_DISABLED].store(1, Ordering::SeqCst);
            }
            return Err(HintError::Layout {
                magic,
                found,
                slots,
            });
        }
        Ok(HintTable { map })
    }

    fn slots(&self) -> usize {
        self.map.words()[H_SLOTS].load(Ordering::Relaxed) as usize
    }

    /// Whether some process disabled the table.
    pub fn disabled(&self) -> bool {
        self.map.words()[H_DISABLED].load(Ordering::SeqCst) != 0
    }

    /// The counter of `(nsp, room)`.
    pub fn slot(&self, nsp: &str, room: &str) -> usize {
        (hash(nsp, room) % self.slots() as u64) as usize
    }

    fn counter(&self, slot: usize) -> &AtomicU32 {
        &self.map.words()[HEADER_WORDS + slot]
    }

    /// The counter's value now.
    pub fn value(&self, slot: usize) -> u32 {
        self.counter(slot).load(Ordering::SeqCst)
    }
}

/// A fixed hash of (namespace, room), the same in every process and release of
/// one [`LAYOUT`]: FNV-1a over the namespace, a 0xff separator (never in
/// UTF-8) and the room, then a final mix so that the low bits spread.
pub fn hash(nsp: &str, room: &str) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in nsp.as_bytes().iter().chain(&[0xff]).chain(room.as_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(PRIME);
    }
    // splitmix64's finaliser.
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// One worker process's use of the table: the shared counters, and its own
/// part of each (private), so that it can tell its rooms from the others'.
pub struct Hints {
    table: HintTable,
    own: Mapping,
}

impl std::fmt::Debug for Hints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hints")
            .field("table", &self.table)
            .finish_non_exhaustive()
    }
}

impl Hints {
    /// This process's view of `table`.
    pub fn new(table: HintTable) -> Result<Hints, HintError> {
        let own = Mapping::private(table.slots() * 4)?;
        Ok(Hints { table, own })
    }

    fn own(&self, slot: usize) -> &AtomicU32 {
        &self.own.words()[slot]
    }

    /// The first member of `room` joined here: counts this process in, before
    /// the join returns.
    pub fn appeared(&self, nsp: &str, room: &str) {
        let slot = self.table.slot(nsp, room);
        // Own part first: meanwhile, `others` sees a difference, never a false zero.
        self.own(slot).fetch_add(1, Ordering::SeqCst);
        self.table.counter(slot).fetch_add(1, Ordering::SeqCst);
    }

    /// The last member of `room` left here, and the primary was told so.
    pub fn gone(&self, nsp: &str, room: &str) {
        let slot = self.table.slot(nsp, room);
        self.table.counter(slot).fetch_sub(1, Ordering::SeqCst);
        self.own(slot).fetch_sub(1, Ordering::SeqCst);
    }

    /// Marks `room` as possibly anywhere, for good.
    pub fn force(&self, nsp: &str, room: &str) {
        let slot = self.table.slot(nsp, room);
        self.table.counter(slot).fetch_or(FORCED, Ordering::SeqCst);
    }

    /// Whether another process may have members of `room`.
    pub fn others(&self, nsp: &str, room: &str) -> bool {
        let slot = self.table.slot(nsp, room);
        let all = self.table.value(slot);
        all & FORCED != 0 || all.wrapping_sub(self.own(slot).load(Ordering::SeqCst)) != 0
    }

    /// Whether a broadcast to `rooms` of `nsp` has no recipient outside this
    /// process: named rooms only (none shaped like a socket id, which is not
    /// counted), each of which no other process has, and the table in use.
    pub fn alone(&self, nsp: &str, rooms: &[String]) -> bool {
        !rooms.is_empty()
            && !self.table.disabled()
            && rooms
                .iter()
                .all(|r| crate::engine::Sid::parse(r).is_none() && !self.others(nsp, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_hash_is_fixed() {
        // Processes of one cluster may run different builds (a reload): the
        // values of this layout never change.
        // (Computed apart from this code: FNV-1a 64, then splitmix64's finaliser.)
        assert_eq!(hash("/", "room"), 0x2a78_14c8_24dc_1e0d);
        assert_eq!(hash("/chat", "general"), 0x6404_985a_2ff7_f8aa);
        assert_ne!(
            hash("/", "ab"),
            hash("/a", "b"),
            "the separator keeps them apart"
        );
        assert_ne!(hash("/", "a"), hash("/chat", "a"));
    }

    #[test]
    fn rooms_spread_over_the_slots() {
        let (table, _fd) = HintTable::create_with(1 << 10).unwrap();
        let used: std::collections::HashSet<usize> = (0..1000)
            .map(|i| table.slot("/", &format!("room-{i}")))
            .collect();
        // 1000 keys in 1024 slots: about 630 distinct ones if the hash is uniform.
        assert!(used.len() > 580, "{} slots used", used.len());
    }

    #[test]
    fn counts_tell_own_rooms_from_the_others() {
        let (table, fd) = HintTable::create_with(1024).unwrap();
        let a = Hints::new(table).unwrap();
        let b = Hints::new(HintTable::open(&fd).unwrap()).unwrap();
        assert!(a.alone("/", &rooms(&["r"])), "nobody has it");
        a.appeared("/", "r");
        assert!(a.alone("/", &rooms(&["r"])), "only a has it");
        assert!(!b.alone("/", &rooms(&["r"])), "b sees a's member");
        assert!(!b.alone("/", &rooms(&["x", "r"])), "every room counts");
        b.appeared("/", "r");
        assert!(!a.alone("/", &rooms(&["r"])));
        b.gone("/", "r");
        assert!(a.alone("/", &rooms(&["r"])));
        a.gone("/", "r");
        assert!(b.alone("/", &rooms(&["r"])));
        // Namespaces are apart.
        a.appeared("/chat", "r");
        assert!(b.alone("/", &rooms(&["r"])));
        assert!(!b.alone("/chat", &rooms(&["r"])));
    }

    #[test]
    fn everyone_socket_ids_and_forced_rooms_are_never_alone() {
        let (table, _fd) = HintTable::create_with(1024).unwrap();
        let a = Hints::new(table).unwrap();
        assert!(!a.alone("/", &[]), "a broadcast to everyone");
        let sid = crate::engine::Sid::random().to_string();
        assert!(!a.alone("/", &rooms(&[&sid])));
        a.appeared("/", "j");
        a.force("/", "j");
        assert!(
            !a.alone("/", &rooms(&["j"])),
            "forced, even with own members"
        );
        a.gone("/", "j");
        assert!(!a.alone("/", &rooms(&["j"])), "forced for good");
    }

    #[test]
    fn another_layout_disables_the_table_for_everyone() {
        let (table, fd) = HintTable::create_with(1024).unwrap();
        let a = Hints::new(table).unwrap();
        assert!(a.alone("/", &rooms(&["r"])));
        // A build of another layout maps the same table.
        a.table.map.words()[H_LAYOUT].store(LAYOUT + 1, Ordering::SeqCst);
        let err = HintTable::open(&fd).unwrap_err();
        assert!(
            matches!(err, HintError::Layout { found, .. } if found == LAYOUT + 1),
            "{err}"
        );
        assert!(!a.alone("/", &rooms(&["r"])), "the table is disabled");
        // Not a table at all.
        let (_, other) = HintTable::create_with(4).unwrap();
        let map = Mapping::shared(&other, HEADER_WORDS * 4).unwrap();
        map.words()[H_MAGIC].store(0, Ordering::SeqCst);
        assert!(matches!(
            HintTable::open(&other),
            Err(HintError::Layout { magic: 0, .. })
        ));
    }
}
