//! The primary: binds every port, starts one worker per core, relays adapter
//! messages between them, restarts the ones that die, and drains on SIGTERM.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use rsio_ipc::{
    Broadcast, EncodedFrame, IpcConnection, IpcSender, Message, WorkerIndex,
    DEFAULT_MAX_FRAME_LENGTH, PROTOCOL_VERSION,
};
use tokio::{
    net::TcpSocket,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::{debug, error, info, warn};

use super::{
    config::{ClusterConfig, PinMode},
    interest::{Reach, RoomInterest},
    notify,
    sessions::SessionStore,
    spawn::{allowed_cpus, WorkerCommand},
};

/// Restarts of one worker within [`CRASH_WINDOW`] after which the primary gives up.
const CRASH_LIMIT: usize = 10;
const CRASH_WINDOW: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(15);
/// A worker that ran this long starts its backoff from the beginning again.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// How long workers may take to drain on shutdown before they are killed.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Exit status when a worker keeps crashing (sysexits' EX_SOFTWARE).
const EXIT_CRASH_LOOP: u8 = 70;
/// Exit status when the ports cannot be bound (EX_UNAVAILABLE).
const EXIT_BIND: u8 = 69;

enum Event {
    Frame {
        worker: usize,
        generation: u64,
        message: Message,
        frame: EncodedFrame,
    },
    IpcClosed {
        worker: usize,
        generation: u64,
    },
    Exited {
        worker: usize,
        generation: u64,
        status: String,
    },
    Restart {
        worker: usize,
    },
}

struct Slot {
    generation: u64,
    sender: Option<IpcSender>,
    pid: Option<u32>,
    alive: bool,
    ready: bool,
    connections: u64,
    started: Instant,
    backoff: Duration,
    restarts: VecDeque<Instant>,
}

struct Primary {
    config: ClusterConfig,
    command: WorkerCommand,
    listeners: Vec<std::net::TcpListener>,
    cpus: Vec<Option<usize>>,
    slots: Vec<Slot>,
    events: mpsc::UnboundedSender<Event>,
    announced_ready: bool,
    shutting_down: bool,
    sessions: SessionStore,
    /// Which workers have members of which rooms.
    interest: RoomInterest,
}

/// Runs the primary until it is told to stop; returns the process's exit status.
pub(crate) fn run(config: ClusterConfig) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            error!(target: "cluster", "cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The workers are spawned from this (main) thread, which lives as long as the
    // primary: PR_SET_PDEATHSIG fires when the spawning thread exits.
    runtime.block_on(run_async(config))
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    // A deep backlog: connections to a restarting worker wait here.
    let listener = socket.listen(4096)?;
    listener.into_std()
}

async fn run_async(config: ClusterConfig) -> ExitCode {
    let command = match WorkerCommand::current() {
        Ok(c) => c,
        Err(err) => {
            error!(target: "cluster", "cannot find this program's path: {err}");
            return ExitCode::FAILURE;
        }
    };
    let mut listeners = Vec::with_capacity(config.workers);
    for i in 0..config.workers {
        let addr = SocketAddr::new(config.host, config.port + i as u16);
        match bind(addr) {
            Ok(l) => listeners.push(l),
            Err(err) => {
                error!(target: "cluster", "cannot listen on {addr}: {err}");
                notify::status(&format!("cannot listen on {addr}: {err}"));
                return ExitCode::from(EXIT_BIND);
            }
        }
    }
    let allowed = allowed_cpus();
    let cpus: Vec<Option<usize>> = (0..config.workers)
        .map(|i| match config.pin {
            PinMode::Auto if !allowed.is_empty() && config.workers <= allowed.len() => {
                Some(allowed[i])
            }
            _ => None,
        })
        .collect();
    if config.pin == PinMode::Auto && config.workers > allowed.len() {
        info!(target: "cluster", "not pinning: {} workers for {} usable CPUs", config.workers, allowed.len());
    }
    info!(
        target: "cluster",
        "rsio {} primary (pid {}): {} workers ({} usable CPUs), ports {}..{}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        config.workers,
        allowed.len().max(1),
        config.port,
        config.port as usize + config.workers - 1
    );
    let (events, mut rx) = mpsc::unbounded_channel();
    let now = Instant::now();
    let mut primary = Primary {
        slots: (0..config.workers)
            .map(|_| Slot {
                generation: 0,
                sender: None,
                pid: None,
                alive: false,
                ready: false,
                connections: 0,
                started: now,
                backoff: FIRST_BACKOFF,
                restarts: VecDeque::new(),
            })
            .collect(),
        config,
        command,
        listeners,
        cpus,
        events,
        announced_ready: false,
        shutting_down: false,
        sessions: SessionStore::new(),
        interest: RoomInterest::default(),
    };
    for i in 0..primary.slots.len() {
        if let Err(err) = primary.start(i) {
            error!(target: "cluster", worker = i, "cannot start worker: {err}");
            primary.shutdown_now().await;
            return ExitCode::FAILURE;
        }
    }

    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        error!(target: "cluster", "cannot install signal handlers");
        return ExitCode::FAILURE;
    };
    let mut status_tick = tokio::time::interval(Duration::from_secs(5));
    let watchdog_every = notify::watchdog_interval();
    let mut watchdog_tick =
        tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let mut exit = ExitCode::SUCCESS;
    let mut drain_deadline: Option<tokio::time::Instant> = None;

    loop {
        let deadline = async {
            match drain_deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            Some(event) = rx.recv() => {
                if let Some(code) = primary.on_event(event) {
                    exit = code;
                    drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_DEADLINE);
                }
            }
            _ = term.recv() => {
                info!(target: "cluster", "SIGTERM: draining");
                primary.begin_shutdown();
                drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_DEADLINE);
            }
            _ = int.recv() => {
                info!(target: "cluster", "SIGINT: draining");
                primary.begin_shutdown();
                drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_DEADLINE);
            }
            _ = hup.recv() => {
                info!(target: "cluster", "SIGHUP: reload is not supported yet; ignored");
            }
            _ = status_tick.tick() => primary.report_status(),
            _ = watchdog_tick.tick(), if watchdog_every.is_some() => notify::watchdog(),
            _ = deadline => {
                warn!(target: "cluster", "workers did not drain in time: killing them");
                primary.kill_all();
                drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
            }
        }
        if primary.shutting_down && primary.slots.iter().all(|s| !s.alive) {
            break;
        }
    }
    info!(target: "cluster", "all workers stopped; primary exits");
    exit
}

impl Primary {
    fn start(&mut self, i: usize) -> std::io::Result<()> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()?;
        ours.set_nonblocking(true)?;
        let child = self.command.spawn(
            i,
            self.config.workers,
            self.cpus[i],
            &self.listeners[i],
            &theirs,
        )?;
        drop(theirs);
        let stream = tokio::net::UnixStream::from_std(ours)?;
        let (mut reader, sender) = IpcConnection::new(stream).into_split();
        let slot = &mut self.slots[i];
        slot.generation += 1;
        slot.sender = Some(sender);
        slot.pid = child.id();
        slot.alive = true;
        slot.ready = false;
        slot.connections = 0;
        slot.started = Instant::now();
        let generation = slot.generation;
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                match reader.next_frame().await {
                    Some(Ok((message, frame))) => {
                        let _ = events.send(Event::Frame {
                            worker: i,
                            generation,
                            message,
                            frame,
                        });
                    }
                    Some(Err(err)) => {
                        // A worker that exits can reset its end: that is its exit, not news.
                        let reset = matches!(&err, rsio_ipc::CodecError::Io(e)
                            if e.kind() == std::io::ErrorKind::ConnectionReset);
                        if reset {
                            debug!(target: "cluster", worker = i, "ipc: {err}");
                        } else {
                            warn!(target: "cluster", worker = i, "ipc: {err}");
                        }
                        break;
                    }
                    None => break,
                }
            }
            let _ = events.send(Event::IpcClosed {
                worker: i,
                generation,
            });
        });
        let events = self.events.clone();
        let mut child = child;
        tokio::spawn(async move {
            let status = match child.wait().await {
                Ok(s) => s.to_string(),
                Err(e) => e.to_string(),
            };
            let _ = events.send(Event::Exited {
                worker: i,
                generation,
                status,
            });
        });
        // The others learn that this worker is (back) in the cluster.
        self.send_others(
            i,
            &Message::WorkerJoined {
                worker: i as WorkerIndex,
            },
        );
        Ok(())
    }

    fn send_others(&self, from: usize, message: &Message) {
        for (j, slot) in self.slots.iter().enumerate() {
            if j != from {
                if let Some(s) = &slot.sender {
                    let _ = s.send(message.clone());
                }
            }
        }
    }

    /// Handles one event; `Some(code)` when the primary must stop with that status.
    fn on_event(&mut self, event: Event) -> Option<ExitCode> {
        match event {
            Event::Frame {
                worker,
                generation,
                message,
                frame,
            } if self.slots[worker].generation == generation => {
                self.on_message(worker, message, frame);
                None
            }
            Event::IpcClosed { worker, generation }
                if self.slots[worker].generation == generation =>
            {
                self.slots[worker].sender = None;
                None
            }
            Event::Exited {
                worker,
                generation,
                status,
            } if self.slots[worker].generation == generation => self.on_exit(worker, &status),
            Event::Restart { worker } => {
                if !self.shutting_down && !self.slots[worker].alive {
                    if let Err(err) = self.start(worker) {
                        error!(target: "cluster", worker, "cannot restart worker: {err}");
                        self.schedule_restart(worker);
                    }
                }
                None
            }
            _ => None,
        }
    }

    fn on_message(&mut self, worker: usize, message: Message, frame: EncodedFrame) {
        match &message {
            Message::Hello { version, pid, .. } => {
                if *version != PROTOCOL_VERSION {
                    error!(target: "cluster", worker, "worker speaks ipc protocol {version}, primary {PROTOCOL_VERSION}: stopping it");
                    if let Some(s) = &self.slots[worker].sender {
                        let _ = s.send(Message::Drain);
                    }
                }
                self.slots[worker].pid = Some(*pid);
            }
            Message::Ready => {
                self.slots[worker].ready = true;
                let port = self.config.port as usize + worker;
                info!(target: "cluster", "worker {worker} (pid {}) listening on http://{}:{port}", self.slots[worker].pid.unwrap_or(0), self.config.host);
                if !self.announced_ready && self.slots.iter().all(|s| s.ready) {
                    self.announced_ready = true;
                    let last = self.config.port as usize + self.slots.len() - 1;
                    info!(target: "cluster", "ready: http://{}:{}..{last} ({} workers)", self.config.host, self.config.port, self.slots.len());
                    notify::ready(&self.status_line());
                } else {
                    self.report_status();
                }
            }
            Message::Stats { connections } => self.slots[worker].connections = *connections,
            Message::RoomInterest { nsp, room, present } => {
                self.interest.set(worker, nsp, room, *present)
            }
            Message::Heartbeat => {}
            Message::RecoveryOn {
                max_disconnection_ms,
                ..
            } => self
                .sessions
                .enable(Duration::from_millis(*max_disconnection_ms)),
            Message::SessionUpdate(session) => self.sessions.update(worker, session.clone()),
            Message::SessionClosed {
                pid, recoverable, ..
            } => self.sessions.closed(pid, *recoverable),
            Message::RestoreSession {
                from,
                request,
                nsp,
                pid,
                offset,
            } => {
                let (session, missed) = match self.sessions.restore(nsp, pid, offset) {
                    Some((s, m)) => (Some(s), m),
                    None => (None, Vec::new()),
                };
                // Until the restored socket joins its rooms there, the asking worker
                // must get what is sent to them (it keeps what raced with the
                // restore); it reports the truth for these rooms once the socket
                // joined or was refused.
                if let Some(s) = &session {
                    for room in &s.rooms {
                        self.interest.set(worker, nsp, room, true);
                    }
                }
                let answer = Message::RestoreSessionResponse {
                    to: *from,
                    request: *request,
                    session,
                    missed,
                    horizon: self.sessions.horizon(),
                };
                if let Some(s) = self
                    .slots
                    .get(*from as usize)
                    .and_then(|s| s.sender.as_ref())
                {
                    let _ = s.send(answer);
                }
            }
            Message::Broadcast(b) if b.offset.is_some() => {
                // A recoverable packet: numbered here, in one sequence for the whole
                // cluster, then sent to every worker, the emitter included, so that
                // every client sees packets in offset order.
                let mut b = b.clone();
                if !self.sessions.sequence(&mut b) {
                    b.offset = None;
                }
                let reach = self.interest.reach(&b.nsp, &b.target.rooms);
                match EncodedFrame::encode(&Message::Broadcast(b), DEFAULT_MAX_FRAME_LENGTH) {
                    Ok(frame) => {
                        for (j, slot) in self.slots.iter().enumerate() {
                            if let (true, Some(s)) = (reach.contains(j), &slot.sender) {
                                let _ = s.send_frame(frame.clone());
                            }
                        }
                    }
                    Err(err) => warn!(target: "cluster", worker, "cannot relay a broadcast: {err}"),
                }
            }
            _ => {
                if let Some(to) = message.is_response() {
                    // Responses go to the requester only.
                    if let Some(s) = self.slots.get(to as usize).and_then(|s| s.sender.as_ref()) {
                        let _ = s.send_frame(frame);
                    }
                } else if message.is_relayed() {
                    self.relay(worker, &message, frame);
                }
            }
        }
    }

    /// Forwards an adapter operation from `from` to the other workers it concerns:
    /// those with members of its rooms, or all of them. The frame is forwarded as
    /// received (no decode, no re-encode); the workers left out of a request are
    /// answered for here, with nothing, so the requester never waits for them.
    fn relay(&mut self, from: usize, message: &Message, frame: EncodedFrame) {
        let reach = match message {
            Message::Broadcast(Broadcast { nsp, target, .. })
            | Message::SocketsJoin { nsp, target, .. }
            | Message::SocketsLeave { nsp, target, .. }
            | Message::DisconnectSockets { nsp, target, .. }
            | Message::FetchSockets { nsp, target, .. } => self.interest.reach(nsp, &target.rooms),
            _ => Reach::All,
        };
        for (j, slot) in self.slots.iter().enumerate() {
            let Some(s) = slot.sender.as_ref().filter(|_| j != from) else {
                continue;
            };
            if reach.contains(j) {
                let _ = s.send_frame(frame.clone());
                if let Message::SocketsJoin { nsp, rooms, .. } = message {
                    // What the joiner sends next must reach the sockets this join
                    // adds there: count the worker in until it says otherwise.
                    for room in rooms {
                        self.interest.set(j, nsp, room, true);
                    }
                }
            } else if let Some(empty) = empty_answer(message, j) {
                if let Some(to) = self.slots.get(from).and_then(|s| s.sender.as_ref()) {
                    let _ = to.send(empty);
                }
            }
        }
    }

    fn on_exit(&mut self, worker: usize, status: &str) -> Option<ExitCode> {
        let slot = &mut self.slots[worker];
        slot.alive = false;
        slot.ready = false;
        slot.sender = None;
        slot.connections = 0;
        self.send_others(
            worker,
            &Message::WorkerExited {
                worker: worker as WorkerIndex,
            },
        );
        self.sessions.worker_gone(worker);
        self.interest.worker_gone(worker);
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

    fn schedule_restart(&mut self, worker: usize) {
        let slot = &mut self.slots[worker];
        let delay = slot.backoff;
        slot.backoff = (slot.backoff.mul_f32(1.5)).min(MAX_BACKOFF);
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = events.send(Event::Restart { worker });
        });
    }

    fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        notify::stopping();
        for slot in &self.slots {
            if let Some(s) = &slot.sender {
                let _ = s.send(Message::Drain);
            }
        }
    }

    fn kill_all(&self) {
        for slot in &self.slots {
            if let (true, Some(pid)) = (slot.alive, slot.pid) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    async fn shutdown_now(&mut self) {
        self.begin_shutdown();
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.kill_all();
    }

    fn status_line(&self) -> String {
        let live = self.slots.iter().filter(|s| s.ready).count();
        let connections: u64 = self.slots.iter().map(|s| s.connections).sum();
        format!(
            "{live}/{} workers, {connections} connections",
            self.slots.len()
        )
    }

    fn report_status(&self) {
        notify::status(&self.status_line());
    }
}

/// What worker `j`, which an operation did not reach, would have answered: for a
/// request, an empty answer; `None` for an operation that expects none.
fn empty_answer(message: &Message, j: usize) -> Option<Message> {
    let from = j as WorkerIndex;
    match message {
        Message::Broadcast(Broadcast {
            ack: Some((to, request, _)),
            ..
        }) => Some(Message::BroadcastClientCount {
            from,
            to: *to,
            request: *request,
            count: 0,
        }),
        Message::FetchSockets {
            from: to, request, ..
        } => Some(Message::FetchSocketsResponse {
            from,
            to: *to,
            request: *request,
            sockets: Vec::new(),
        }),
        _ => None,
    }
}
