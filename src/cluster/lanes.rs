//! The primary's side of the interest hints and the direct links between
//! workers (see [`crate::adapter::hints`] and [`crate::adapter::direct`]): it
//! gives each worker process a lane at its spawn, sets up a link between the
//! new process and every live one before the new one starts, and clears a
//! process's lane once it has exited, before the lane is given again.
//!
//! Slot `i` of `W` has lanes `i` and `W + i`: a process started while another
//! of its slot lives (a reload, a restart while the old one drains) gets the
//! other one. If anything of this fails, the table is disabled for every
//! process, and every broadcast goes through the primary again, which has the
//! exact view: never a broadcast sent to nobody.

use std::os::fd::{AsFd, OwnedFd};

use nix::sys::{
    socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType},
    time::TimeVal,
};
use tracing::{error, warn};

use crate::adapter::{direct, hints};

/// How long the primary waits for a worker's links channel to take a record:
/// one that does not read it for this long is stuck.
const CHANNEL_SEND_TIMEOUT_S: i64 = 1;

/// A live process's lane.
struct Live {
    /// The primary's end of its links channel.
    channel: OwnedFd,
    epoch: u64,
}

/// A lane given to a process about to be spawned.
pub(super) struct Assigned {
    pub lane: usize,
    /// The process's end of its links channel, to be inherited.
    pub channel: OwnedFd,
}

/// The hint table and the lanes of the live processes.
pub(super) struct Lanes {
    table: Option<hints::HintTable>,
    /// The table's descriptor, passed to every worker.
    memfd: Option<OwnedFd>,
    workers: usize,
    next_epoch: u64,
    live: Vec<Option<Live>>,
}

impl Lanes {
    /// The lanes of a cluster of `workers`; without a table (it could not be
    /// made) every broadcast goes through the primary.
    pub(super) fn new(workers: usize) -> Lanes {
        let (table, memfd) = match hints::HintTable::create(2 * workers) {
            Ok((table, fd)) => (Some(table), Some(fd)),
            Err(err) => {
                warn!(target: "cluster", "no interest hints, every broadcast goes through the primary: {err}");
                (None, None)
            }
        };
        Lanes {
            table,
            memfd,
            workers,
            next_epoch: 0,
            live: (0..2 * workers).map(|_| None).collect(),
        }
    }

    /// No table (for tests of the primary's bookkeeping).
    #[cfg(test)]
    pub(super) fn none(workers: usize) -> Lanes {
        Lanes {
            table: None,
            memfd: None,
            workers,
            next_epoch: 0,
            live: (0..2 * workers).map(|_| None).collect(),
        }
    }

    /// The hint table's descriptor, for a worker to inherit.
    pub(super) fn memfd(&self) -> Option<&OwnedFd> {
        self.memfd.as_ref()
    }

    /// The hint table, when there is one.
    pub(super) fn table(&self) -> Option<&hints::HintTable> {
        self.table.as_ref()
    }

    /// Gives a lane to the next process of slot `slot`, with a link to every
    /// live process (and to each of them, a link to it) written to the
    /// channels before it is spawned. `None` when there is no table, or it had
    /// to be disabled.
    pub(super) fn assign(&mut self, slot: usize) -> Option<Assigned> {
        let table = self.table.as_ref()?;
        if table.disabled() {
            return None;
        }
        match self.try_assign(slot) {
            Ok(assigned) => Some(assigned),
            Err(why) => {
                error!(target: "cluster", worker = slot, "no direct links for the new worker {slot} ({why}): every broadcast goes through the primary from now on");
                if let Some(table) = &self.table {
                    table.disable();
                }
                None
            }
        }
    }

    fn try_assign(&mut self, slot: usize) -> Result<Assigned, String> {
        let table = self.table.as_ref().ok_or("no table")?;
        let lane = [slot, self.workers + slot]
            .into_iter()
            .find(|&l| self.live[l].is_none())
            .ok_or("both lanes of the slot are in use")?;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| format!("links channel: {e}"))?;
        setsockopt(
            &ours,
            sockopt::SendTimeout,
            &TimeVal::new(CHANNEL_SEND_TIMEOUT_S, 0),
        )
        .map_err(|e| format!("links channel timeout: {e}"))?;
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        // Before any record: a process that meets this epoch finds its link.
        table.set_epoch(lane, epoch);
        for (other, live) in self.live.iter().enumerate() {
            let Some(live) = live else { continue };
            let (a, b) = socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
            .map_err(|e| format!("link: {e}"))?;
            match direct::send_link(live.channel.as_fd(), lane, epoch, a.as_fd()) {
                Ok(()) => {}
                // Exited, its exit not handled yet: its lane is cleared then.
                Err(nix::errno::Errno::EPIPE | nix::errno::Errno::ECONNREFUSED) => {}
                Err(e) => return Err(format!("the process of lane {other} takes no link: {e}")),
            }
            direct::send_link(ours.as_fd(), other, live.epoch, b.as_fd())
                .map_err(|e| format!("link to lane {other}: {e}"))?;
        }
        self.live[lane] = Some(Live {
            channel: ours,
            epoch,
        });
        Ok(Assigned {
            lane,
            channel: theirs,
        })
    }

    /// The epoch of the process now on `lane`; `None` when none is (or the
    /// lane does not exist).
    pub(super) fn epoch(&self, lane: usize) -> Option<u64> {
        self.live.get(lane)?.as_ref().map(|l| l.epoch)
    }

    /// The slot whose processes get `lane`.
    pub(super) fn slot_of(&self, lane: usize) -> usize {
        hints::worker_of_lane(lane, 2 * self.workers)
    }

    /// The process of `lane` has exited (or was never started): its column
    /// and epoch are cleared, and the lane may be given again.
    pub(super) fn release(&mut self, lane: usize) {
        if let Some(slot) = self.live.get_mut(lane) {
            *slot = None;
        }
        if let Some(table) = &self.table {
            table.clear_lane(lane);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;
    use crate::adapter::direct::{recv_link, Received};

    /// The links in `channel`: (lane, epoch, this end).
    fn links(channel: &OwnedFd) -> Vec<(usize, u64, std::os::unix::net::UnixStream)> {
        let mut out = Vec::new();
        loop {
            match recv_link(channel.as_fd()) {
                Ok(Received::Link { lane, epoch, fd }) => out.push((lane, epoch, fd.into())),
                Err(nix::errno::Errno::EAGAIN) => return out,
                Ok(_) => panic!("not a link"),
                Err(e) => panic!("{e}"),
            }
        }
    }

    #[test]
    fn a_new_process_and_every_live_one_are_linked_before_it_starts() {
        let mut lanes = Lanes::new(2);
        let a = lanes.assign(0).expect("slot 0");
        let b = lanes.assign(1).expect("slot 1");
        assert_eq!((a.lane, b.lane), (0, 1));
        let table = lanes.table.as_ref().unwrap();
        let (ea, eb) = (table.epoch(0), table.epoch(1));
        assert!(ea != 0 && eb != 0 && ea != eb);
        let at_a = links(&a.channel);
        let at_b = links(&b.channel);
        assert_eq!(
            at_a.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
            vec![(1, eb)]
        );
        assert_eq!(
            at_b.iter().map(|l| (l.0, l.1)).collect::<Vec<_>>(),
            vec![(0, ea)]
        );
        // The two ends are one link.
        (&at_a[0].2).write_all(b"ab").unwrap();
        let mut buf = [0u8; 2];
        (&at_b[0].2).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ab");

        // A reload of slot 0: the new process gets the slot's other lane, and
        // links to both live processes, which each get one to it.
        let c = lanes.assign(0).expect("slot 0 again");
        assert_eq!(c.lane, 2);
        let ec = lanes.table.as_ref().unwrap().epoch(2);
        let mut at_c: Vec<_> = links(&c.channel).iter().map(|l| (l.0, l.1)).collect();
        at_c.sort();
        assert_eq!(at_c, vec![(0, ea), (1, eb)]);
        assert_eq!(
            links(&a.channel)
                .iter()
                .map(|l| (l.0, l.1))
                .collect::<Vec<_>>(),
            vec![(2, ec)]
        );
        assert_eq!(
            links(&b.channel)
                .iter()
                .map(|l| (l.0, l.1))
                .collect::<Vec<_>>(),
            vec![(2, ec)]
        );
        assert!(
            lanes.assign(0).is_none(),
            "both lanes of slot 0 live: no third"
        );
        // A third process of slot 0 could not count its rooms in: every
        // process goes back to the primary.
        assert!(lanes.table.as_ref().unwrap().disabled());
        assert!(lanes.assign(1).is_none(), "nor any lane after");
    }

    #[test]
    fn a_released_lane_is_cleared_and_given_again_with_a_new_epoch() {
        let mut lanes = Lanes::new(1);
        let a = lanes.assign(0).expect("slot 0");
        let first = lanes.table.as_ref().unwrap().epoch(a.lane);
        drop(a);
        lanes.release(0);
        assert_eq!(
            lanes.table.as_ref().unwrap().epoch(0),
            0,
            "no process on lane 0"
        );
        let b = lanes.assign(0).expect("slot 0 again");
        assert_eq!(b.lane, 0);
        assert!(lanes.table.as_ref().unwrap().epoch(0) > first);
        assert!(links(&b.channel).is_empty(), "nobody else lives");
    }
}
