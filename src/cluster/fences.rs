//! The primary's side of the forces of `socketsJoin`, `socketsLeave` and
//! `disconnectSockets` (see [`crate::adapter::hints::forced_by`]):
//! the worker that sends one forces its rooms in the hint table, so that every
//! broadcast to them goes through the primary, behind it. Here the force ends
//! once every worker the primary relayed the operation to has handled it:
//! right after the operation, each gets a `Message::Fence`, which it sends back
//! when it reaches it (a worker handles the primary's messages in order). A
//! worker that exits, or is replaced by a reload, is not waited for. Then
//! every worker that may have a socket the operation touched has applied it,
//! and a direct broadcast can neither overtake it nor miss a socket it added.
//! A worker's own `FenceRequest` (see `adapter::cluster::sticky`) is a fence
//! to every other worker too, answered with `FenceDone` instead.

use std::collections::HashMap;

/// What a fence does once every worker it waits for has echoed it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Then {
    /// End one force on each of these slots.
    Release(Vec<usize>),
    /// Answer `FenceDone { id }` to worker `to` (its `FenceRequest`).
    Reply {
        /// The worker that asked.
        to: usize,
        /// Its request's id.
        id: u64,
    },
}

/// Fences waiting for their echoes, by fence id.
#[derive(Debug, Default)]
pub(crate) struct Fences {
    next: u64,
    pending: HashMap<u64, Pending>,
}

#[derive(Debug)]
struct Pending {
    then: Then,
    /// The workers that have not answered yet.
    waiting: Vec<usize>,
}

impl Fences {
    /// A fence sent to `workers`: its id, or `then` back to do now when
    /// there is nobody to wait for.
    pub(crate) fn open(&mut self, then: Then, workers: Vec<usize>) -> Result<u64, Then> {
        if workers.is_empty() {
            return Err(then);
        }
        self.next += 1;
        self.pending.insert(
            self.next,
            Pending {
                then,
                waiting: workers,
            },
        );
        Ok(self.next)
    }

    /// `worker` answered fence `id`: what to do when it was the last one
    /// waited for. An answer nobody waits for is ignored.
    pub(crate) fn answered(&mut self, worker: usize, id: u64) -> Option<Then> {
        let pending = self.pending.get_mut(&id)?;
        pending.waiting.retain(|&w| w != worker);
        if pending.waiting.is_empty() {
            return self.pending.remove(&id).map(|p| p.then);
        }
        None
    }

    /// `worker` is gone (exited, or replaced): what the fences that waited
    /// for it alone now do; answers owed to it are dropped.
    pub(crate) fn worker_gone(&mut self, worker: usize) -> Vec<Then> {
        let mut done = Vec::new();
        let ids: Vec<u64> = self.pending.keys().copied().collect();
        for id in ids {
            let Some(p) = self.pending.get_mut(&id) else {
                continue;
            };
            p.waiting.retain(|&w| w != worker);
            let orphan = matches!(p.then, Then::Reply { to, .. } if to == worker);
            if p.waiting.is_empty() || orphan {
                if let Some(p) = self.pending.remove(&id) {
                    if !orphan {
                        done.push(p.then);
                    }
                }
            }
        }
        done
    }

    /// Fences not answered yet.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_force_ends_when_the_last_worker_reached_answers() {
        let mut f = Fences::default();
        let id = f.open(Then::Release(vec![3, 9]), vec![1, 2]).unwrap();
        assert_eq!(f.answered(1, id), None, "worker 2 has not answered");
        assert_eq!(f.answered(1, id), None, "an answer twice counts once");
        assert_eq!(f.answered(0, id), None, "worker 0 was not waited for");
        assert_eq!(f.answered(2, id), Some(Then::Release(vec![3, 9])));
        assert_eq!(f.answered(2, id), None, "released once");
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn an_operation_that_reached_nobody_releases_at_once() {
        let mut f = Fences::default();
        assert_eq!(
            f.open(Then::Release(vec![5]), Vec::new()),
            Err(Then::Release(vec![5]))
        );
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_worker_gone_is_not_waited_for() {
        let mut f = Fences::default();
        let a = f.open(Then::Release(vec![1]), vec![1]).unwrap();
        let b = f.open(Then::Release(vec![2]), vec![1, 2]).unwrap();
        let asked = f.open(Then::Reply { to: 1, id: 4 }, vec![2]).unwrap();
        assert_eq!(
            f.worker_gone(1),
            vec![Then::Release(vec![1])],
            "only the fence waiting for worker 1 alone; nobody is left to answer"
        );
        assert_eq!(
            f.answered(2, asked),
            None,
            "dropped with the worker that asked"
        );
        assert_eq!(f.answered(1, a), None, "already released");
        assert_eq!(f.answered(2, b), Some(Then::Release(vec![2])));
        assert_eq!(f.answered(7, 99), None, "an unknown fence is ignored");
        assert_eq!(f.len(), 0);
    }
}
