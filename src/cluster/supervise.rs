//! The primary's care of its workers: starting them, watching that they live (their
//! exit, their heartbeat, their backlog), killing the ones that are stuck or
//! misbehave, restarting them with backoff, and telling whether all is well (for the
//! systemd watchdog).
//!
//! A worker is only ever signalled through the `Child` the primary spawned: the task
//! that waits on it also kills it, so the signal can never reach a reused pid, and no
//! pid a worker reports is ever used.

use std::{
    collections::VecDeque,
    process::ExitCode,
    sync::Arc,
    time::{Duration, Instant},
};

use rsio_ipc::{IpcConnection, IpcSender, Message, WorkerIndex, DEFAULT_MAX_FRAME_LENGTH};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use super::{
    inbox::Reading,
    notify,
    primary::{Event, Primary},
    spawn::WorkerFds,
};

/// Restarts of one worker within [`CRASH_WINDOW`] after which the primary gives up.
const CRASH_LIMIT: usize = 10;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// A worker that ran this long starts its backoff from the beginning again.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Exit status when a worker keeps crashing (sysexits' EX_SOFTWARE).
const EXIT_CRASH_LOOP: u8 = 70;
/// A ready worker silent this long (it heartbeats every second) has a stuck event
/// loop: it is killed. With [`LIVENESS_EVERY`], a loop stuck at time t is killed by
/// t + 2.75 s.
pub(super) const HEARTBEAT_TIMEOUT: Duration = Duration::from_millis(2500);
/// How often the primary looks at its workers' heartbeats.
pub(super) const LIVENESS_EVERY: Duration = Duration::from_millis(250);
/// Until it is ready, a worker may be silent this long: building the application may
/// block its loop (opening a database, loading files).
const STARTUP_GRACE: Duration = Duration::from_secs(30);
/// A worker silent longer than this is not healthy, for the watchdog, until it has
/// been killed.
const HEALTHY_WITHIN: Duration = Duration::from_millis(1500);
/// A killed worker that has not exited after this long makes the primary unhealthy.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// A liveness check this late means the primary itself was stalled (stopped,
/// starved): the workers' silence is then not theirs.
const PRIMARY_STALL: Duration = Duration::from_secs(1);

/// One worker's place: the current process in it, and its restart history.
pub(super) struct Slot {
    /// The generation of the process serving this slot.
    pub generation: u64,
    /// The last generation spawned for this slot (serving, incoming or retiring).
    spawned: u64,
    /// During a reload: the new process, until it is ready.
    pub incoming: Option<Process>,
    /// During a reload: the old process, draining.
    pub retiring: Option<Process>,
    pub sender: Option<IpcSender>,
    /// The pid the primary spawned, for logs only.
    pub pid: u32,
    /// Wakes the task that owns the worker's `Child`, which then SIGKILLs it.
    kill: Option<Arc<Notify>>,
    killed_at: Option<Instant>,
    pub alive: bool,
    pub said_hello: bool,
    pub ready: bool,
    /// When the worker last showed its event loop runs (hello, ready, heartbeat).
    pub last_heartbeat: Instant,
    pub connections: u64,
    /// With `--shared-port`: the socket its connections are handed over on.
    pub handoff: Option<std::os::unix::net::UnixStream>,
    /// Its lane in the hint table (see [`super::lanes`]), released at its exit.
    pub lane: Option<usize>,
    /// New sessions handed to it since its last connection count.
    pub routed_new: u64,
    started: Instant,
    backoff: Duration,
    restarts: VecDeque<Instant>,
}

impl Slot {
    pub(super) fn new(now: Instant) -> Slot {
        Slot {
            generation: 0,
            spawned: 0,
            incoming: None,
            retiring: None,
            sender: None,
            pid: 0,
            kill: None,
            killed_at: None,
            alive: false,
            said_hello: false,
            ready: false,
            last_heartbeat: now,
            connections: 0,
            handoff: None,
            lane: None,
            routed_new: 0,
            started: now,
            backoff: FIRST_BACKOFF,
            restarts: VecDeque::new(),
        }
    }

    /// Makes `process` the one serving this slot (`ready` when it already said so).
    pub(super) fn serve(&mut self, process: Process, ready: bool) {
        self.generation = process.generation;
        self.sender = process.sender;
        self.pid = process.pid;
        self.kill = Some(process.kill);
        self.killed_at = None;
        self.alive = true;
        self.said_hello = process.said_hello;
        self.ready = ready;
        self.connections = 0;
        self.started = process.since;
        self.last_heartbeat = process.last_heartbeat;
        self.handoff = process.handoff;
        self.lane = process.lane;
        self.routed_new = 0;
    }

    /// Takes the serving process out of this slot (a reload drains it).
    pub(super) fn take_serving(&mut self) -> Option<Process> {
        if !self.alive {
            return None;
        }
        let kill = self.kill.take()?;
        let now = Instant::now();
        self.alive = false;
        self.ready = false;
        Some(Process {
            generation: self.generation,
            sender: self.sender.take(),
            pid: self.pid,
            kill,
            killed: self.killed_at.is_some(),
            said_hello: self.said_hello,
            since: now,
            last_heartbeat: now,
            // A draining process gets no more connections.
            handoff: self.handoff.take(),
            lane: self.lane.take(),
            rooms: Vec::new(),
        })
    }

    /// No process of this slot runs, nor is being started or drained.
    pub(super) fn idle(&self) -> bool {
        !self.alive && self.incoming.is_none() && self.retiring.is_none()
    }
}

/// A worker process beside the one serving its slot (see [`super::reload`]).
pub(super) struct Process {
    pub generation: u64,
    pub sender: Option<IpcSender>,
    pub pid: u32,
    kill: Arc<Notify>,
    pub killed: bool,
    pub said_hello: bool,
    /// When it was started (incoming) or told to drain (retiring).
    pub since: Instant,
    pub last_heartbeat: Instant,
    /// With `--shared-port`: the socket its connections are handed over on.
    pub handoff: Option<std::os::unix::net::UnixStream>,
    /// Its lane in the hint table, released at its exit.
    pub lane: Option<usize>,
    /// An incoming process's room reports, read before its swap (the primary's
    /// inbox hands room reports over ahead of what came with them, so a room
    /// of a client that came right after `Ready` can come before it): applied
    /// once it serves, after the slot's interest is reset.
    pub rooms: Vec<(String, String, bool)>,
}

impl Process {
    /// A process of `generation` that runs nothing (for the primary's tests).
    #[cfg(test)]
    pub(super) fn fake(generation: u64) -> Process {
        let now = Instant::now();
        Process {
            generation,
            sender: None,
            pid: 0,
            kill: Arc::new(Notify::new()),
            killed: false,
            said_hello: true,
            since: now,
            last_heartbeat: now,
            handoff: None,
            lane: None,
            rooms: Vec::new(),
        }
    }

    /// SIGKILLs it (through the task that owns its `Child`).
    pub(super) fn kill(&mut self) {
        if !self.killed {
            self.killed = true;
            self.sender = None;
            self.kill.notify_one();
        }
    }
}

impl Primary {
    /// Spawns worker `i` as a new generation, with the tasks that read its messages
    /// and wait for its exit, but does not put it in its slot.
    pub(super) fn spawn_process(&mut self, i: usize) -> std::io::Result<Process> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let handoff = match self.config.shared_port {
            true => Some(std::os::unix::net::UnixStream::pair()?),
            false => None,
        };
        // Its links are in place before it starts (see `super::lanes`).
        let assigned = self.lanes.assign(i);
        let spawned = self.command.spawn(
            i,
            self.config.workers,
            self.cpus[i],
            WorkerFds {
                listener: &self.listeners[i],
                ipc: &theirs,
                handoff: handoff
                    .as_ref()
                    .map(|(_, theirs)| theirs as &dyn std::os::fd::AsRawFd),
                hints: self.lanes.memfd().map(|fd| fd as &dyn std::os::fd::AsRawFd),
                links: assigned
                    .as_ref()
                    .map(|a| (&a.channel as &dyn std::os::fd::AsRawFd, a.lane)),
            },
        );
        let lane = assigned.map(|a| a.lane);
        let mut child = match spawned {
            Ok(child) => child,
            Err(err) => {
                if let Some(lane) = lane {
                    self.lanes.release(lane);
                }
                return Err(err);
            }
        };
        drop(theirs);
        let handoff = handoff.map(|(ours, _)| ours);
        let stream = tokio::net::UnixStream::from_std(ours)?;
        let (reader, sender) = IpcConnection::with_limits(
            stream,
            DEFAULT_MAX_FRAME_LENGTH,
            self.config.max_ipc_backlog_bytes,
        )
        .into_split();
        let kill = Arc::new(Notify::new());
        let now = Instant::now();
        let slot = &mut self.slots[i];
        slot.spawned += 1;
        let generation = slot.spawned;
        let process = Process {
            generation,
            sender: Some(sender),
            pid: child.id().unwrap_or(0),
            kill: kill.clone(),
            killed: false,
            said_hello: false,
            since: now,
            last_heartbeat: now,
            handoff,
            lane,
            rooms: Vec::new(),
        };
        // Read by the primary's inbox, in sweeps with every other worker's socket.
        let _ = self.readers.send(Reading {
            worker: i,
            generation,
            reader,
        });
        let events = self.events.clone();
        tokio::spawn(async move {
            let status = loop {
                tokio::select! {
                    status = child.wait() => break status,
                    _ = kill.notified() => {
                        // Only signals a child not reaped yet: never a reused pid.
                        if let Err(err) = child.start_kill() {
                            debug!(target: "cluster", worker = i, "kill: {err}");
                        }
                    }
                }
            };
            let status = match status {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = events.send(Event::Exited {
                worker: i,
                generation,
                status,
            });
        });
        Ok(process)
    }

    /// Spawns worker `i` into its slot.
    pub(super) fn start(&mut self, i: usize) -> std::io::Result<()> {
        let process = self.spawn_process(i)?;
        self.slots[i].serve(process, false);
        // The others learn that this worker is (back) in the cluster.
        self.send_others(
            i,
            &Message::WorkerJoined {
                worker: i as WorkerIndex,
            },
        );
        Ok(())
    }

    /// SIGKILLs worker `worker` (restarted once it has exited) and stops relaying to it.
    pub(super) fn kill(&mut self, worker: usize, reason: std::fmt::Arguments<'_>) {
        let slot = &mut self.slots[worker];
        if !slot.alive || slot.killed_at.is_some() {
            return;
        }
        if self.shutting_down {
            warn!(target: "cluster", worker, "killing worker {worker} (pid {}): {reason}", slot.pid);
        } else {
            warn!(target: "cluster", worker, "killing worker {worker} (pid {}): {reason}; it will be restarted", slot.pid);
        }
        slot.killed_at = Some(Instant::now());
        slot.ready = false;
        // Frees its backlog once the socket closes, and relays nothing more to it.
        slot.sender = None;
        slot.handoff = None;
        if let Some(kill) = &slot.kill {
            kill.notify_one();
        }
    }

    /// Worker `from` (its draining process, when `retiring`) found its direct
    /// link to the process of `lane` and `epoch` at its backlog limit: that
    /// process does not read. It is killed as for the primary's own backlog
    /// (see [`Primary::send_to`]), and restarted, if it still has that lane
    /// and epoch; a report about a process gone, or a lane given again since,
    /// is ignored (never a newer process killed for an older one).
    pub(super) fn link_stuck(&mut self, from: usize, retiring: bool, lane: usize, epoch: u64) {
        if lane >= 2 * self.slots.len() {
            warn!(target: "cluster", worker = from, "worker {from} reports a stuck direct link to lane {lane}, which does not exist: ignored");
            return;
        }
        if self.lanes.epoch(lane) != Some(epoch) {
            debug!(target: "cluster", worker = from, lane, epoch, "a stuck direct link to a process gone: ignored");
            return;
        }
        let own = match retiring {
            true => self.slots[from].retiring.as_ref().and_then(|p| p.lane),
            false => self.slots[from].lane,
        };
        if own == Some(lane) {
            warn!(target: "cluster", worker = from, "worker {from} reports its own lane {lane} stuck: ignored");
            return;
        }
        let j = self.lanes.slot_of(lane);
        let reason = format!(
            "it does not read its direct link from worker {from} (backlog over {} bytes)",
            self.config.max_ipc_backlog_bytes
        );
        let slot = &mut self.slots[j];
        if slot.alive && slot.lane == Some(lane) {
            self.kill(j, format_args!("{reason}"));
        } else if let Some(p) = slot.retiring.as_mut().filter(|p| p.lane == Some(lane)) {
            warn!(target: "cluster", worker = j, "killing the draining worker {j} (pid {}): {reason}", p.pid);
            p.kill();
        } else if let Some(p) = slot.incoming.as_mut().filter(|p| p.lane == Some(lane)) {
            warn!(target: "cluster", worker = j, "killing the new worker {j} (pid {}): {reason}", p.pid);
            // Its exit stops the reload.
            p.kill();
        }
    }

    /// SIGKILLs every live worker (a drain that took too long, a failed start).
    pub(super) fn kill_all(&mut self) {
        for i in 0..self.slots.len() {
            self.kill(i, format_args!("the cluster is stopping"));
            let slot = &mut self.slots[i];
            slot.incoming
                .iter_mut()
                .chain(&mut slot.retiring)
                .for_each(Process::kill);
        }
    }

    /// Kills the workers whose event loop stopped: silent past [`HEARTBEAT_TIMEOUT`]
    /// once ready, or past [`STARTUP_GRACE`] before. `lag` is how late this check runs.
    pub(super) fn check_liveness(&mut self, lag: Duration) {
        let now = Instant::now();
        if lag > PRIMARY_STALL {
            // We did not read while stalled: their heartbeats may be waiting for us.
            warn!(target: "cluster", "the primary was stalled for {lag:?}; giving the workers time to be heard");
            for slot in &mut self.slots {
                slot.last_heartbeat = now;
            }
            return;
        }
        self.check_reload_liveness(now, STARTUP_GRACE);
        for i in 0..self.slots.len() {
            let slot = &self.slots[i];
            if !slot.alive || slot.killed_at.is_some() {
                continue;
            }
            let silent = now.duration_since(slot.last_heartbeat);
            if slot.ready && silent > HEARTBEAT_TIMEOUT {
                self.kill(
                    i,
                    format_args!("no heartbeat for {silent:.1?}: its event loop is stuck"),
                );
            } else if !slot.ready && silent > STARTUP_GRACE {
                let what = if slot.said_hello { "ready" } else { "hello" };
                self.kill(
                    i,
                    format_args!("no {what} and no heartbeat for {silent:.1?} after its start"),
                );
            }
        }
    }

    /// Whether every worker serves, or is being replaced as it should: the condition
    /// for `WATCHDOG=1`. A worker whose heartbeat is late and that is not killed yet,
    /// or a killed one that does not exit, is not.
    pub(super) fn healthy(&self) -> bool {
        let now = Instant::now();
        self.slots.iter().all(|s| match (s.alive, s.killed_at) {
            // Exited: its restart is scheduled (a crash loop stops the primary).
            (false, _) => true,
            (true, Some(at)) => now.duration_since(at) < KILL_GRACE,
            (true, None) if s.ready => now.duration_since(s.last_heartbeat) < HEALTHY_WITHIN,
            (true, None) => now.duration_since(s.last_heartbeat) < STARTUP_GRACE,
        })
    }

    /// A worker's process ended: restart it with backoff, or give up on a crash loop.
    pub(super) fn on_exit(&mut self, worker: usize, status: &str) -> Option<ExitCode> {
        let slot = &mut self.slots[worker];
        slot.alive = false;
        slot.ready = false;
        slot.sender = None;
        slot.kill = None;
        slot.connections = 0;
        slot.handoff = None;
        if let Some(lane) = slot.lane.take() {
            self.lanes.release(lane);
        }
        self.send_others(
            worker,
            &Message::WorkerExited {
                worker: worker as WorkerIndex,
            },
        );
        self.sessions.worker_gone(worker);
        self.interest.worker_gone(worker);
        self.unfence(worker);
        if self.shutting_down {
            info!(target: "cluster", worker, "worker exited ({status})");
            return None;
        }
        warn!(target: "cluster", worker, "worker died ({status}); restarting");
        let slot = &mut self.slots[worker];
        let now = Instant::now();
        if now.duration_since(slot.started) > STABLE_AFTER {
            slot.backoff = FIRST_BACKOFF;
        }
        slot.restarts.push_back(now);
        while slot
            .restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > CRASH_WINDOW)
        {
            slot.restarts.pop_front();
        }
        if slot.restarts.len() > CRASH_LIMIT {
            error!(target: "cluster", worker, "worker crashed {} times in {:?}: giving up", slot.restarts.len(), CRASH_WINDOW);
            notify::status(&format!("worker {worker} keeps crashing; stopping"));
            self.begin_shutdown();
            return Some(ExitCode::from(EXIT_CRASH_LOOP));
        }
        self.report_status();
        self.schedule_restart(worker);
        None
    }

    pub(super) fn schedule_restart(&mut self, worker: usize) {
        let slot = &mut self.slots[worker];
        let delay = slot.backoff;
        slot.backoff = (slot.backoff.mul_f32(1.5)).min(MAX_BACKOFF);
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Restart { worker });
        });
    }
}

#[cfg(test)]
mod tests {
    use rsio_ipc::{EncodedFrame, DEFAULT_MAX_FRAME_LENGTH};

    use super::*;
    use crate::cluster::lanes::Lanes;

    /// Worker `from` (its process of generation 1) reports `lane` and `epoch` stuck.
    fn report(primary: &mut Primary, from: usize, lane: usize, epoch: u64) {
        let message = Message::LinkStuck {
            lane: lane as u32,
            epoch,
        };
        let frame = EncodedFrame::encode(&message, DEFAULT_MAX_FRAME_LENGTH).unwrap();
        primary.on_event(Event::Frame {
            worker: from,
            generation: primary.slots[from].generation,
            message,
            frame,
        });
    }

    fn killed(primary: &Primary) -> Vec<usize> {
        (0..primary.slots.len())
            .filter(|&i| primary.slots[i].killed_at.is_some())
            .collect()
    }

    /// Serves slot `i` with a process of `generation` on a new lane.
    fn serve(primary: &mut Primary, i: usize, generation: u64) -> crate::cluster::lanes::Assigned {
        let assigned = primary.lanes.assign(i).expect("a lane");
        let mut process = Process::fake(generation);
        process.lane = Some(assigned.lane);
        primary.slots[i].serve(process, true);
        assigned
    }

    #[tokio::test]
    async fn a_stuck_link_kills_the_process_of_its_lane_and_epoch_only() {
        let mut primary = Primary::for_tests(3);
        primary.lanes = Lanes::new(3);
        let _channels: Vec<_> = (0..3).map(|i| serve(&mut primary, i, 1)).collect();
        let first = primary.lanes.epoch(1).unwrap();

        // Worker 1's process died and its successor has lane 1 again, with a
        // new epoch: a report about the old one kills nobody.
        primary.on_exit(1, "signal: 9");
        let _again = serve(&mut primary, 1, 2);
        let second = primary.lanes.epoch(1).unwrap();
        assert_ne!(first, second);
        report(&mut primary, 0, 1, first);
        assert_eq!(killed(&primary), Vec::<usize>::new(), "a stale epoch");
        // Nor does one about a lane that does not exist, or that has no
        // process, or about the reporter itself.
        report(&mut primary, 0, 99, second);
        report(&mut primary, 0, 4, second);
        report(&mut primary, 1, 1, second);
        assert_eq!(killed(&primary), Vec::<usize>::new());

        // The current process of lane 1 is killed (once), no other.
        report(&mut primary, 0, 1, second);
        report(&mut primary, 2, 1, second);
        assert_eq!(killed(&primary), vec![1]);
    }
}
