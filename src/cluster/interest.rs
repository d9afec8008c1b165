//! Which workers have members of which rooms: the primary's view, kept from the
//! workers' [`Message::RoomInterest`](rsio_ipc::Message::RoomInterest) reports,
//! so that an operation aimed at rooms reaches only the workers that have one.
//!
//! A worker reports a room when its first socket joins it and when its last
//! socket leaves it (not on every join). A socket's own id room is never
//! reported (every socket has one): a target room shaped like a socket id
//! reaches every worker, as every room did before interest was kept.

use std::collections::HashMap;

use crate::engine::Sid;

/// A set of worker indices, one bit each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WorkerSet {
    words: Vec<u64>,
}

impl WorkerSet {
    /// Every worker of a cluster of `count`.
    #[cfg(test)]
    pub(crate) fn all(count: usize) -> WorkerSet {
        let mut set = WorkerSet::default();
        for w in 0..count {
            set.insert(w);
        }
        set
    }

    pub(crate) fn insert(&mut self, worker: usize) {
        let (word, bit) = (worker / 64, worker % 64);
        if self.words.len() <= word {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    pub(crate) fn remove(&mut self, worker: usize) {
        if let Some(w) = self.words.get_mut(worker / 64) {
            *w &= !(1 << (worker % 64));
        }
    }

    pub(crate) fn contains(&self, worker: usize) -> bool {
        self.words
            .get(worker / 64)
            .is_some_and(|w| w & (1 << (worker % 64)) != 0)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.words.iter().all(|w| *w == 0)
    }

    fn union_with(&mut self, other: &WorkerSet) {
        if self.words.len() < other.words.len() {
            self.words.resize(other.words.len(), 0);
        }
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a |= b;
        }
    }

    /// The workers in the set, in increasing order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
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

/// Where an operation goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reach {
    /// Every worker (no room filter, or a room the primary does not track).
    All,
    /// Only these workers (possibly none).
    Only(WorkerSet),
}

impl Reach {
    /// Whether worker `w` is reached.
    pub(crate) fn contains(&self, w: usize) -> bool {
        match self {
            Reach::All => true,
            Reach::Only(set) => set.contains(w),
        }
    }
}

/// Per namespace, per room: the workers that have at least one member.
#[derive(Debug, Default)]
pub(crate) struct RoomInterest {
    namespaces: HashMap<String, HashMap<String, WorkerSet>>,
}

impl RoomInterest {
    /// Records that `worker` has (`present`) or no longer has members of `room`.
    pub(crate) fn set(&mut self, worker: usize, nsp: &str, room: &str, present: bool) {
        if present {
            self.namespaces
                .entry_ref(nsp)
                .entry(room.to_string())
                .or_default()
                .insert(worker);
            return;
        }
        let Some(rooms) = self.namespaces.get_mut(nsp) else {
            return;
        };
        if let Some(set) = rooms.get_mut(room) {
            set.remove(worker);
            if set.is_empty() {
                rooms.remove(room);
            }
        }
        if rooms.is_empty() {
            self.namespaces.remove(nsp);
        }
    }

    /// Forgets everything `worker` reported (it died or was replaced).
    pub(crate) fn worker_gone(&mut self, worker: usize) {
        self.namespaces.retain(|_, rooms| {
            rooms.retain(|_, set| {
                set.remove(worker);
                !set.is_empty()
            });
            !rooms.is_empty()
        });
    }

    /// The workers an operation aimed at `rooms` of `nsp` must reach (every
    /// worker when `rooms` is empty: the operation targets every socket).
    pub(crate) fn reach(&self, nsp: &str, rooms: &[String]) -> Reach {
        if rooms.is_empty() || rooms.iter().any(|r| Sid::parse(r).is_some()) {
            return Reach::All;
        }
        let mut out = WorkerSet::default();
        if let Some(known) = self.namespaces.get(nsp) {
            for room in rooms {
                if let Some(set) = known.get(room) {
                    out.union_with(set);
                }
            }
        }
        Reach::Only(out)
    }

    /// Number of (namespace, room) entries kept.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.namespaces.values().map(HashMap::len).sum()
    }
}

/// `HashMap::entry` that allocates the key only when it is missing.
trait EntryRef<V> {
    fn entry_ref(&mut self, key: &str) -> &mut V;
}

impl<V: Default> EntryRef<V> for HashMap<String, V> {
    fn entry_ref(&mut self, key: &str) -> &mut V {
        if !self.contains_key(key) {
            self.insert(key.to_string(), V::default());
        }
        self.get_mut(key).expect("inserted above")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rooms(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn only(workers: &[usize]) -> Reach {
        let mut set = WorkerSet::default();
        for &w in workers {
            set.insert(w);
        }
        Reach::Only(set)
    }

    #[test]
    fn a_room_reaches_the_workers_that_reported_it() {
        let mut i = RoomInterest::default();
        i.set(1, "/", "a", true);
        i.set(3, "/", "a", true);
        i.set(2, "/", "b", true);
        assert_eq!(i.reach("/", &rooms(&["a"])), only(&[1, 3]));
        assert_eq!(i.reach("/", &rooms(&["a", "b"])), only(&[1, 2, 3]));
        assert_eq!(i.reach("/", &rooms(&["c"])), only(&[]));
        // Namespaces are apart.
        assert_eq!(i.reach("/other", &rooms(&["a"])), only(&[]));
    }

    #[test]
    fn interest_goes_with_the_last_member_and_with_the_worker() {
        let mut i = RoomInterest::default();
        i.set(0, "/", "a", true);
        i.set(1, "/", "a", true);
        i.set(0, "/", "a", false);
        assert_eq!(i.reach("/", &rooms(&["a"])), only(&[1]));
        i.set(1, "/", "b", true);
        i.worker_gone(1);
        assert_eq!(i.reach("/", &rooms(&["a", "b"])), only(&[]));
        assert_eq!(i.len(), 0, "empty rooms and namespaces are dropped");
        // A report for a room never seen is harmless.
        i.set(2, "/x", "nope", false);
        assert_eq!(i.len(), 0);
    }

    #[test]
    fn everyone_and_socket_ids_reach_every_worker() {
        let mut i = RoomInterest::default();
        i.set(0, "/", "a", true);
        assert_eq!(i.reach("/", &[]), Reach::All);
        let sid = Sid::random().to_string();
        assert_eq!(i.reach("/", &rooms(&["a", &sid])), Reach::All);
    }

    #[test]
    fn worker_sets_past_64_workers() {
        let mut set = WorkerSet::all(130);
        assert!(set.contains(0) && set.contains(64) && set.contains(129));
        assert!(!set.contains(130));
        set.remove(64);
        assert_eq!(set.iter().count(), 129);
        assert!(!set.iter().any(|w| w == 64));
        let mut i = RoomInterest::default();
        i.set(100, "/", "a", true);
        i.set(5, "/", "b", true);
        let Reach::Only(got) = i.reach("/", &rooms(&["a", "b"])) else {
            panic!("expected a set");
        };
        assert_eq!(got.iter().collect::<Vec<_>>(), vec![5, 100]);
    }
}
