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

use std::collections::HashMap;

/// Forces waiting for their operation to be handled, by fence id.
#[derive(Debug, Default)]
pub(crate) struct Fences {
    next: u64,
    pending: HashMap<u64, Pending>,
}

#[derive(Debug)]
struct Pending {
    /// The forced slots, to release.
    slots: Vec<usize>,
    /// The workers that have not answered yet.
    waiting: Vec<usize>,
}

impl Fences {
    /// A fence for the forced `slots` of an operation relayed to `workers`:
    /// its id to send them, or the slots back to release now when it reached
    /// none.
    pub(crate) fn open(
        &mut self,
        slots: Vec<usize>,
        workers: Vec<usize>,
    ) -> Result<u64, Vec<usize>> {
        if workers.is_empty() {
            return Err(slots);
        }
        self.next += 1;
        self.pending.insert(
            self.next,
            Pending {
                slots,
                waiting: workers,
            },
        );
        Ok(self.next)
    }

    /// `worker` answered fence `id`: the slots to release when it was the
    /// last one waited for. An answer nobody waits for is ignored.
    pub(crate) fn answered(&mut self, worker: usize, id: u64) -> Option<Vec<usize>> {
        let pending = self.pending.get_mut(&id)?;
        pending.waiting.retain(|&w| w != worker);
        if pending.waiting.is_empty() {
            return self.pending.remove(&id).map(|p| p.slots);
        }
        None
    }

    /// `worker` is gone (exited, or replaced): the slots of every fence that
    /// waited for it alone, to release.
    pub(crate) fn worker_gone(&mut self, worker: usize) -> Vec<usize> {
        let mut released = Vec::new();
        self.pending.retain(|_, p| {
            p.waiting.retain(|&w| w != worker);
            if p.waiting.is_empty() {
                released.append(&mut p.slots);
                return false;
            }
            true
        });
        released
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
        let id = f.open(vec![3, 9], vec![1, 2]).unwrap();
        assert_eq!(f.answered(1, id), None, "worker 2 has not answered");
        assert_eq!(f.answered(1, id), None, "an answer twice counts once");
        assert_eq!(f.answered(0, id), None, "worker 0 was not waited for");
        assert_eq!(f.answered(2, id), Some(vec![3, 9]));
        assert_eq!(f.answered(2, id), None, "released once");
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn an_operation_that_reached_nobody_releases_at_once() {
        let mut f = Fences::default();
        assert_eq!(f.open(vec![5], Vec::new()), Err(vec![5]));
        assert_eq!(f.len(), 0);
    }

    #[test]
    fn a_worker_gone_is_not_waited_for() {
        let mut f = Fences::default();
        let a = f.open(vec![1], vec![1]).unwrap();
        let b = f.open(vec![2], vec![1, 2]).unwrap();
        assert_eq!(
            f.worker_gone(1),
            vec![1],
            "only the fence waiting for worker 1 alone"
        );
        assert_eq!(f.answered(1, a), None, "already released");
        assert_eq!(f.answered(2, b), Some(vec![2]));
        assert_eq!(f.answered(7, 99), None, "an unknown fence is ignored");
        assert_eq!(f.len(), 0);
    }
}
