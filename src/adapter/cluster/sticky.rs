//! A worker's broadcasts to a room go back from the primary's path to the
//! direct links only behind a fence of its own. While a room is forced (see
//! [`super::hints::forced_by`]) its broadcasts go through the primary; once
//! the force ends they would go straight, and a straight one could reach a
//! worker before an earlier one still on its way through the primary. So a
//! worker remembers the slots it sent through the primary while they were
//! forced, keeps sending to them that way, and, right behind the first
//! broadcast it sends that way once they are no longer forced, asks the
//! primary for a fence (`Message::FenceRequest`): the primary handles it
//! after everything this worker sent before, sends a fence to every other
//! worker, and answers `Message::FenceDone` once each has echoed it, i.e.
//! handled every earlier broadcast. The slots sent to up to the request are
//! then free; one sent to since stays held (under a steady stream to a room
//! faster than a fence's round trip, the room stays on the primary's path).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard,
    },
};

/// The slots this process sent to through the primary while they were forced.
#[derive(Debug, Default)]
pub(super) struct Sticky {
    /// Whether any slot is held: the hot path's only look.
    any: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Slot → the number of the last broadcast sent to it through the primary.
    slots: HashMap<usize, u64>,
    /// Broadcasts numbered so far.
    sent: u64,
    /// The fence asked for and the last broadcast it covers.
    asked: Option<(u64, u64)>,
    /// A fence to ask for behind the broadcast being sent.
    to_ask: Option<u64>,
    next_id: u64,
}

impl Sticky {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether no slot is held (no lock taken).
    pub(super) fn is_empty(&self) -> bool {
        !self.any.load(Ordering::Acquire)
    }

    /// A broadcast to `slots` went through the primary while one of them was forced.
    pub(super) fn sent_through_primary(&self, slots: &[usize]) {
        let mut inner = self.inner();
        inner.sent += 1;
        let n = inner.sent;
        for &slot in slots {
            inner.slots.insert(slot, n);
        }
        self.any.store(true, Ordering::Release);
    }

    /// Whether a broadcast to `slots` must still go through the primary
    /// (then it counts as sent that way, and a fence is asked for behind it
    /// when none is: see [`Sticky::take_ask`]).
    pub(super) fn holds(&self, slots: &[usize]) -> bool {
        let mut inner = self.inner();
        if !slots.iter().any(|s| inner.slots.contains_key(s)) {
            return false;
        }
        inner.sent += 1;
        let n = inner.sent;
        for &slot in slots {
            inner.slots.insert(slot, n);
        }
        if inner.asked.is_none() {
            inner.next_id += 1;
            let id = inner.next_id;
            inner.asked = Some((id, n));
            inner.to_ask = Some(id);
        }
        true
    }

    /// The fence to ask the primary for, once: right after the broadcast
    /// that [`Sticky::holds`] kept on the primary's path.
    pub(super) fn take_ask(&self) -> Option<u64> {
        if self.is_empty() {
            return None;
        }
        self.inner().to_ask.take()
    }

    /// The fence `id` came back: what was sent before it was handled
    /// everywhere, and its slots are free (those sent to since stay held).
    pub(super) fn done(&self, id: u64) {
        let mut inner = self.inner();
        let Some((asked, covers)) = inner.asked else {
            return;
        };
        if asked != id {
            return;
        }
        inner.asked = None;
        inner.slots.retain(|_, n| *n > covers);
        self.any.store(!inner.slots.is_empty(), Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_sent_through_the_primary_is_held_until_a_fence_behind_it_comes_back() {
        let s = Sticky::default();
        assert!(s.is_empty());
        assert!(!s.holds(&[1]), "nothing held yet");
        s.sent_through_primary(&[1, 2]);
        assert!(!s.is_empty());
        assert!(!s.holds(&[3]), "another slot goes straight");
        assert_eq!(s.take_ask(), None);
        assert!(s.holds(&[1]), "held");
        assert_eq!(s.take_ask(), Some(1), "a fence behind it");
        assert_eq!(s.take_ask(), None, "asked once");
        s.done(7);
        assert!(!s.is_empty(), "another fence's answer frees nothing");
        s.done(1);
        assert!(s.is_empty(), "everything sent up to the request is handled");
        assert!(!s.holds(&[1]) && !s.holds(&[2]));
    }

    #[test]
    fn a_broadcast_after_the_fence_was_asked_waits_for_the_next_one() {
        let s = Sticky::default();
        s.sent_through_primary(&[1]);
        assert!(s.holds(&[1]));
        assert_eq!(s.take_ask(), Some(1));
        // Before the answer: still held, no second request.
        assert!(s.holds(&[1]));
        assert_eq!(s.take_ask(), None);
        s.done(1);
        assert!(s.holds(&[1]), "sent after the request");
        assert_eq!(s.take_ask(), Some(2));
        s.done(2);
        assert!(s.is_empty());
    }
}
