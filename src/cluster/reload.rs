//! Reloading on `SIGHUP`: the workers are replaced one at a time with the binary
//! now on disk. For each slot, a new process is started beside the serving one
//! (both hold the same listener); once it is ready it serves the slot, and the old
//! one is told to drain: it stops accepting (new connections wait in the listen
//! backlog, or go to the new process) and closes its sessions as "server shutting
//! down", which clients take as a transport close: they reconnect and recover their
//! sessions from the primary's store. The next slot starts once the old process
//! exited.
//!
//! While it drains, the old process still speaks for its slot: its session
//! updates, broadcasts and responses are handled as the slot's. The primary
//! relays nothing to it (what its clients miss, they recover), so its room
//! reports are ignored (other workers' direct broadcasts still reach it: it
//! keeps its lane, the new process has the slot's other one, see
//! [`super::lanes`]),
//! and the slot's room interest restarts from the new process's reports (those
//! read before the swap included: a client may join a room between the new
//! process's `Ready` and the swap). Its
//! sessions move to their own key in the store, so that its exit disconnects those
//! only. A request it made before the swap is answered to the new process (the old
//! one's waits time out).
//!
//! A second `SIGHUP` during a reload is queued (one reload follows, however many
//! arrive). A new process that exits, or is not ready within the startup grace,
//! stops the reload; the old processes keep serving.

use std::{
    process::ExitCode,
    time::{Duration, Instant},
};

use rsio_ipc::{EncodedFrame, Message};
use tracing::{debug, error, info, warn};

use super::{
    primary::{Event, Primary},
    validate,
};

/// An old process still draining after this long is killed.
const RETIRE_DEADLINE: Duration = Duration::from_secs(30);

/// Where a reload stands.
#[derive(Debug, Default)]
pub(super) struct Reload {
    /// The slot being replaced, while a reload runs.
    current: Option<usize>,
    /// A `SIGHUP` came during this reload: another one follows it.
    queued: bool,
    /// Slots replaced in this reload.
    replaced: usize,
}

impl Primary {
    /// `SIGHUP`: starts a reload, or queues one if a reload runs.
    pub(super) fn request_reload(&mut self) {
        if self.shutting_down {
            info!(target: "cluster", "SIGHUP while stopping: no reload");
            return;
        }
        if self.reload.current.is_some() {
            info!(target: "cluster", "SIGHUP during a reload: another reload is queued");
            self.reload.queued = true;
            return;
        }
        info!(target: "cluster", "SIGHUP: reloading {} workers from {}", self.slots.len(), self.command.exe.display());
        self.reload.replaced = 0;
        self.reload_slot(0);
    }

    /// Starts the new process of slot `i`, skipping the slots with no serving
    /// process (their restart runs the binary on disk anyway).
    fn reload_slot(&mut self, mut i: usize) {
        while i < self.slots.len() && !self.slots[i].alive {
            i += 1;
        }
        if i >= self.slots.len() {
            self.reload.current = None;
            info!(target: "cluster", "reload complete: {} workers replaced", self.reload.replaced);
            self.report_status();
            if std::mem::take(&mut self.reload.queued) {
                self.request_reload();
            }
            return;
        }
        self.reload.current = Some(i);
        match self.spawn_process(i) {
            Ok(process) => {
                info!(target: "cluster", worker = i, "reload: starting a new worker {i} (pid {})", process.pid);
                self.slots[i].incoming = Some(process);
            }
            Err(err) => self.reload_failed(i, format_args!("cannot start it: {err}")),
        }
    }

    fn reload_failed(&mut self, i: usize, why: std::fmt::Arguments<'_>) {
        error!(target: "cluster", worker = i, "reload stopped: the new worker {i} failed ({why}); the old workers keep serving");
        self.reload.current = None;
        self.reload.queued = false;
        self.report_status();
    }

    /// An event of a process that does not serve its slot (an incoming or a
    /// retiring one); events of processes gone are dropped.
    pub(super) fn on_side_event(&mut self, event: Event) -> Option<ExitCode> {
        let (worker, generation) = match &event {
            Event::Frame {
                worker, generation, ..
            }
            | Event::Bad {
                worker, generation, ..
            }
            | Event::IpcClosed { worker, generation }
            | Event::Exited {
                worker, generation, ..
            } => (*worker, *generation),
            Event::Restart { .. } | Event::Route { .. } | Event::Redis { .. } => return None,
        };
        let slot = &self.slots[worker];
        if slot.incoming.as_ref().map(|p| p.generation) == Some(generation) {
            self.on_incoming_event(worker, event);
        } else if slot.retiring.as_ref().map(|p| p.generation) == Some(generation) {
            self.on_retiring_event(worker, event);
        }
        None
    }

    fn on_incoming_event(&mut self, i: usize, event: Event) {
        let Some(process) = self.slots[i].incoming.as_mut() else {
            return;
        };
        match event {
            Event::Frame { message, .. } => {
                process.last_heartbeat = Instant::now();
                match &message {
                    Message::Hello { .. } if !validate::version_matches(&message) => {
                        process.kill();
                        self.reload_failed(i, format_args!("it speaks another ipc protocol"));
                    }
                    Message::Hello { .. } => process.said_hello = true,
                    Message::Ready => self.swap(i),
                    Message::RecoveryOn {
                        max_disconnection_ms,
                        ..
                    } => self
                        .sessions
                        .enable(Duration::from_millis(*max_disconnection_ms)),
                    Message::Heartbeat | Message::Stats { .. } => {}
                    Message::RoomInterest { nsp, room, present } => {
                        process.rooms.push((nsp.clone(), room.clone(), *present));
                    }
                    Message::RedisMember {
                        nsp,
                        uid,
                        own_entries,
                    } => {
                        let generation = process.generation;
                        self.redis_member(i, generation, nsp, uid, *own_entries);
                    }
                    // It has no client yet: nothing else concerns the cluster.
                    other => {
                        debug!(target: "cluster", worker = i, "reload: {} before ready: ignored", other.kind_name())
                    }
                }
            }
            Event::Bad { reason, .. } => {
                process.kill();
                self.reload_failed(i, format_args!("unreadable ipc message: {reason}"));
            }
            Event::IpcClosed { .. } => process.sender = None,
            Event::Exited { status, .. } => {
                if let Some(lane) = self.slots[i].incoming.take().and_then(|p| p.lane) {
                    self.lanes.release(lane);
                }
                if self.reload.current == Some(i) {
                    self.reload_failed(i, format_args!("it exited before it was ready: {status}"));
                }
            }
            Event::Restart { .. } | Event::Route { .. } | Event::Redis { .. } => {}
        }
    }

    /// The new process of slot `i` is ready: it serves the slot, the old one drains.
    fn swap(&mut self, i: usize) {
        let Some(new) = self.slots[i].incoming.take() else {
            return;
        };
        let count = self.slots.len();
        let slot = &mut self.slots[i];
        let old = slot.take_serving();
        let new_pid = new.pid;
        let mut new = new;
        let rooms = std::mem::take(&mut new.rooms);
        slot.serve(new, true);
        let port = self.config.port as usize + i;
        info!(target: "cluster", "worker {i} (pid {new_pid}) listening on http://{}:{port}", self.config.host);
        self.reload.replaced += 1;
        // Whatever the slot's rooms were, they were the old process's: it gets nothing
        // relayed any more, and the new one reports its own.
        self.interest.worker_gone(i);
        self.unfence(i);
        for (nsp, room, present) in &rooms {
            self.interest.set(i, nsp, room, *present);
        }
        match old {
            Some(mut old) => {
                info!(target: "cluster", worker = i, "reload: worker {i} replaced: pid {new_pid} serves, pid {} drains", old.pid);
                self.sessions.move_worker(i, count + i);
                if let Some(s) = &old.sender {
                    let _ = s.send(Message::Retire);
                }
                old.since = Instant::now();
                self.slots[i].retiring = Some(old);
            }
            // The old one died meanwhile: nothing to wait for.
            None => self.reload_slot(i + 1),
        }
    }

    fn on_retiring_event(&mut self, i: usize, event: Event) {
        let count = self.slots.len();
        let Some(process) = self.slots[i].retiring.as_mut() else {
            return;
        };
        match event {
            Event::Frame { message, frame, .. } => {
                if let Err(violation) = validate::check(i, count, true, &message) {
                    warn!(target: "cluster", worker = i, "killing the draining worker {i} (pid {}): {violation}", process.pid);
                    process.kill();
                    return;
                }
                self.on_retiring_message(i, message, frame);
            }
            Event::Bad { reason, .. } => {
                warn!(target: "cluster", worker = i, "killing the draining worker {i} (pid {}): unreadable ipc message: {reason}", process.pid);
                process.kill();
            }
            Event::IpcClosed { .. } => process.sender = None,
            Event::Exited { status, .. } => {
                info!(target: "cluster", worker = i, "reload: the old worker {i} (pid {}) exited ({status})", process.pid);
                if let Some(lane) = self.slots[i].retiring.take().and_then(|p| p.lane) {
                    self.lanes.release(lane);
                }
                // Its sessions still connected are disconnected, and recoverable.
                self.sessions.worker_gone(count + i);
                if self.reload.current == Some(i) && !self.shutting_down {
                    self.reload_slot(i + 1);
                }
            }
            Event::Restart { .. } | Event::Route { .. } | Event::Redis { .. } => {}
        }
    }

    /// What a draining process says still counts for its slot, but for what only
    /// concerns the process itself (liveness, its rooms, new sessions).
    fn on_retiring_message(&mut self, i: usize, message: Message, frame: EncodedFrame) {
        match message {
            Message::Hello { .. }
            | Message::Ready
            | Message::Heartbeat
            | Message::Stats { .. }
            | Message::RoomInterest { .. }
            | Message::RestoreSession { .. } => {}
            Message::SessionUpdate(session) => {
                self.sessions.update(self.slots.len() + i, session);
            }
            message => self.on_message(i, message, frame, true),
        }
    }

    /// Kills an incoming process not ready within `grace`, and a retiring one
    /// still draining after [`RETIRE_DEADLINE`].
    pub(super) fn check_reload_liveness(&mut self, now: Instant, grace: Duration) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if let Some(p) = slot.retiring.as_mut() {
                if !p.killed && now.duration_since(p.since) > RETIRE_DEADLINE {
                    warn!(target: "cluster", worker = i, "the old worker {i} (pid {}) did not drain within {RETIRE_DEADLINE:?}: killing it", p.pid);
                    p.kill();
                }
            }
            if let Some(p) = slot.incoming.as_mut() {
                if !p.killed && now.duration_since(p.last_heartbeat) > grace {
                    p.kill();
                    self.reload_failed(i, format_args!("not ready within {grace:?}"));
                }
            }
        }
    }

    /// Stopping: an incoming process is not needed any more.
    pub(super) fn stop_reload(&mut self) {
        self.reload.current = None;
        self.reload.queued = false;
        for slot in &mut self.slots {
            if let Some(p) = slot.incoming.as_mut() {
                p.kill();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rsio_ipc::DEFAULT_MAX_FRAME_LENGTH;

    use super::*;
    use crate::cluster::supervise::Process;

    fn frame(worker: usize, generation: u64, message: Message) -> Event {
        let frame = EncodedFrame::encode(&message, DEFAULT_MAX_FRAME_LENGTH).unwrap();
        Event::Frame {
            worker,
            generation,
            message,
            frame,
        }
    }

    fn report(room: &str, present: bool) -> Message {
        Message::RoomInterest {
            nsp: "/".into(),
            room: room.into(),
            present,
        }
    }

    #[tokio::test]
    async fn a_room_of_the_new_process_read_before_its_swap_is_kept() {
        let mut primary = Primary::for_tests(2);
        for (i, generation) in [(0, 1), (1, 1)] {
            primary.slots[i].serve(Process::fake(generation), true);
        }
        primary.on_event(frame(0, 1, report("old", true)));
        // Slot 0 is reloaded: its new process (generation 2) said it was ready,
        // and a client of it joined rooms at once. The inbox hands the room
        // reports over first: they come before `Ready`.
        primary.reload.current = Some(0);
        primary.slots[0].incoming = Some(Process::fake(2));
        primary.on_event(frame(0, 2, report("new", true)));
        primary.on_event(frame(0, 2, report("brief", true)));
        primary.on_event(frame(0, 2, report("brief", false)));
        primary.on_event(frame(0, 2, Message::Ready));
        assert_eq!(primary.slots[0].generation, 2, "the new process serves");
        let reaches =
            |p: &Primary, room: &str| p.interest.reach("/", &[room.to_string()]).contains(0);
        assert!(reaches(&primary, "new"), "its room survived the swap");
        assert!(!reaches(&primary, "brief"), "in the order reported");
        assert!(
            !reaches(&primary, "old"),
            "the old process's rooms are gone"
        );
    }
}
