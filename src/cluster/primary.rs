//! The primary: binds every port, starts one worker per core, relays adapter
//! messages between them (checking each: a worker speaks only for itself; the
//! relaying itself is [`super::relay`], the shared port's routing
//! [`super::shared_port`]), restarts
//! the ones that die or hang (see [`super::supervise`]), and drains on SIGTERM.

use std::{
    net::SocketAddr,
    process::ExitCode,
    time::{Duration, Instant},
};

use rsio_ipc::{EncodedFrame, Message, DEFAULT_MAX_FRAME_LENGTH};
use tokio::{
    net::TcpSocket,
    signal::unix::{signal, SignalKind},
    sync::mpsc,
    time::MissedTickBehavior,
};
use tracing::{debug, error, info, warn};

use super::{
    config::{ClusterConfig, PinMode},
    fences::Fences,
    inbox::{Inbox, Reading},
    interest::RoomInterest,
    lanes::Lanes,
    listen_fds,
    metrics::ClusterMetrics,
    metrics_http, notify,
    redis_host::{self, RedisMembers},
    reload::Reload,
    sessions::SessionStore,
    shared_port::{self, Route},
    spawn::{allowed_cpus, WorkerCommand},
    supervise::{Slot, LIVENESS_EVERY},
    validate,
};

/// How long workers may take to drain on shutdown before they are killed.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);
/// Exit status when the ports cannot be bound (EX_UNAVAILABLE).
const EXIT_BIND: u8 = 69;

pub(super) enum Event {
    Frame {
        worker: usize,
        generation: u64,
        message: Message,
        frame: EncodedFrame,
    },
    /// The worker sent what does not decode (or exceeds the frame limit).
    Bad {
        worker: usize,
        generation: u64,
        reason: String,
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
    /// A connection to the shared port, its request line read.
    Route {
        stream: std::net::TcpStream,
        route: Route,
    },
    /// A broadcast the host's Redis reader read, for the workers; `from`: the
    /// uid that published it, if it has one; `to`: which workers it is for.
    Redis {
        frame: EncodedFrame,
        from: Option<bytes::Bytes>,
        to: crate::adapter::Route,
    },
}

pub(super) struct Primary {
    pub config: ClusterConfig,
    pub command: WorkerCommand,
    pub listeners: Vec<std::net::TcpListener>,
    pub cpus: Vec<Option<usize>>,
    pub slots: Vec<Slot>,
    pub events: mpsc::UnboundedSender<Event>,
    /// Where each started worker's socket goes to be read (see [`Inbox`]).
    pub readers: mpsc::UnboundedSender<Reading>,
    announced_ready: bool,
    pub shutting_down: bool,
    pub sessions: SessionStore,
    /// Which workers have members of which rooms.
    pub interest: RoomInterest,
    /// Forced rooms waiting for their operation to be handled.
    pub fences: Fences,
    /// The interest hint table every worker maps, and the lanes and direct
    /// links of the worker processes (see [`super::lanes`]).
    pub lanes: Lanes,
    /// The `SIGHUP` reload in progress, if any.
    pub reload: Reload,
    /// With `--redis`: which worker has which Redis uid.
    pub redis_members: RedisMembers,
    /// With `--redis`: the host's one reader of the broadcasts (its loops
    /// stop once it is dropped).
    pub redis_reader: Option<std::sync::Arc<crate::adapter::HostReader>>,
    /// Set with `--metrics`; with the ipc bytes received from and sent to each
    /// worker since its last report.
    pub metrics: Option<(ClusterMetrics, Vec<(u64, u64)>)>,
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
    let mut shared = None;
    if config.shared_port {
        let addr = SocketAddr::new(config.host, config.port);
        match bind(addr).and_then(tokio::net::TcpListener::from_std) {
            Ok(l) => shared = Some(l),
            Err(err) => {
                error!(target: "cluster", "cannot listen on {addr}: {err}");
                notify::status(&format!("cannot listen on {addr}: {err}"));
                return ExitCode::from(EXIT_BIND);
            }
        }
    }
    // Listeners kept by systemd across a restart (or a socket unit's) are taken
    // back rather than bound: their accept queues never closed.
    let mut inherited = listen_fds::Inherited::from_env();
    for i in 0..config.workers {
        let port = config.worker_port(i);
        let addr = SocketAddr::new(config.host, port);
        let listener = match inherited.take(port) {
            Some(l) => {
                info!(target: "cluster", "listening on port {port} with the socket systemd kept");
                l
            }
            None => match bind(addr) {
                Ok(l) => l,
                Err(err) => {
                    error!(target: "cluster", "cannot listen on {addr}: {err}");
                    notify::status(&format!("cannot listen on {addr}: {err}"));
                    return ExitCode::from(EXIT_BIND);
                }
            },
        };
        if let Err(err) = listen_fds::store(&listener, port) {
            warn!(target: "cluster", "cannot store the listener of port {port} with systemd: {err}");
        }
        listeners.push(listener);
    }
    inherited.close_rest();
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
        config.worker_port(0),
        config.worker_port(config.workers - 1)
    );
    let (events, mut rx) = mpsc::unbounded_channel();
    let (mut inbox, readers) = Inbox::new();
    if let Some(listener) = shared {
        info!(target: "cluster", "shared port {}: the primary hands connections to the workers", config.port);
        tokio::spawn(shared_port::accept_loop(listener, events.clone()));
    }
    let now = Instant::now();
    let lanes = Lanes::new(config.workers);
    let mut primary = Primary {
        slots: (0..config.workers).map(|_| Slot::new(now)).collect(),
        config,
        command,
        listeners,
        cpus,
        events,
        readers,
        announced_ready: false,
        shutting_down: false,
        sessions: SessionStore::new(),
        interest: RoomInterest::default(),
        fences: Fences::default(),
        lanes,
        reload: Reload::default(),
        redis_members: RedisMembers::default(),
        redis_reader: None,
        metrics: None,
    };
    primary.redis_reader = redis_host::start(&primary);
    if let Some(addr) = primary.config.metrics {
        let m = ClusterMetrics::new(primary.slots.len());
        if let Err(err) = metrics_http::serve(addr, m.clone()) {
            error!(target: "cluster", "cannot serve metrics on {addr}: {err}");
            return ExitCode::from(EXIT_BIND);
        }
        primary.metrics = Some((m, vec![(0, 0); primary.slots.len()]));
    }

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
    // Pings come from this loop, and only while the workers are well: a stalled
    // loop sends none, and no burst after it either.
    let watchdog_every = notify::watchdog_interval();
    let mut watchdog_tick =
        tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    watchdog_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut liveness_tick = tokio::time::interval(LIVENESS_EVERY);
    liveness_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_liveness = Instant::now();
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
            batch = inbox.next_batch() => {
                for event in batch {
                    if let Some(code) = primary.on_event(event) {
                        exit = code;
                        drain_deadline.get_or_insert_with(|| tokio::time::Instant::now() + DRAIN_DEADLINE);
                    }
                }
            }
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
            _ = hup.recv() => primary.request_reload(),
            _ = status_tick.tick() => primary.report_status(),

            _ = watchdog_tick.tick(), if watchdog_every.is_some() => {
                if primary.healthy() {
                    notify::watchdog();
                } else {
                    debug!(target: "cluster", "a worker is unwell: no WATCHDOG=1");
                }
            }
            _ = liveness_tick.tick() => {
                let now = Instant::now();
                let lag = now.duration_since(last_liveness).saturating_sub(LIVENESS_EVERY);
                last_liveness = now;
                primary.check_liveness(lag);
            }
            _ = deadline => {
                warn!(target: "cluster", "workers did not drain in time: killing them");
                primary.kill_all();
                drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
            }
        }
        if primary.shutting_down && primary.slots.iter().all(|s| s.idle()) {
            break;
        }
    }
    info!(target: "cluster", "all workers stopped; primary exits");
    exit
}

impl Primary {
    /// What each worker of `primary` would read: its socket is one end of a
    /// socketpair, and the other end is returned (for tests).
    #[cfg(test)]
    pub(super) fn connect_for_tests(&mut self) -> Vec<rsio_ipc::IpcReader> {
        use rsio_ipc::IpcConnection;
        let mut readers = Vec::new();
        for slot in &mut self.slots {
            let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
            slot.sender = Some(IpcConnection::new(ours).into_split().1);
            readers.push(IpcConnection::new(theirs).into_split().0);
        }
        readers
    }

    /// A primary of `workers` slots with no process and no port (for tests of
    /// its bookkeeping).
    #[cfg(test)]
    pub(super) fn for_tests(workers: usize) -> Primary {
        let config = super::ClusterArgs {
            workers: Some(workers),
            ..super::ClusterArgs::default()
        };
        let now = Instant::now();
        Primary {
            config: config.resolve().expect("a valid config"),
            command: WorkerCommand {
                exe: std::path::PathBuf::from("/nonexistent"),
                args: Vec::new(),
            },
            listeners: Vec::new(),
            cpus: vec![None; workers],
            slots: (0..workers).map(|_| Slot::new(now)).collect(),
            events: mpsc::unbounded_channel().0,
            readers: Inbox::new().1,
            announced_ready: false,
            shutting_down: false,
            sessions: SessionStore::new(),
            interest: RoomInterest::default(),
            fences: Fences::default(),
            lanes: Lanes::none(workers),
            reload: Reload::default(),
            redis_members: RedisMembers::default(),
            redis_reader: None,
            metrics: None,
        }
    }

    /// Handles one event; `Some(code)` when the primary must stop with that status.
    pub(super) fn on_event(&mut self, event: Event) -> Option<ExitCode> {
        match event {
            Event::Frame {
                worker,
                generation,
                message,
                frame,
            } if self.slots[worker].generation == generation => {
                if let Some((_, ipc)) = &mut self.metrics {
                    ipc[worker].0 += frame.len() as u64;
                }
                let said_hello = self.slots[worker].said_hello;
                match validate::check(worker, self.slots.len(), said_hello, &message) {
                    Ok(()) => self.on_message(worker, message, frame, false),
                    Err(violation) => self.kill(worker, format_args!("{violation}")),
                }
                None
            }
            Event::Bad {
                worker,
                generation,
                reason,
            } if self.slots[worker].generation == generation => {
                self.kill(worker, format_args!("unreadable ipc message: {reason}"));
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
            } if self.slots[worker].generation == generation => {
                let code = self.on_exit(worker, &status);
                self.sync_metrics();
                code
            }
            Event::Route { stream, route } => {
                self.route(stream, route);
                None
            }
            Event::Redis { frame, from, to } => {
                self.forward_redis(&frame, from.as_deref(), &to);
                None
            }
            Event::Restart { worker } => {
                if !self.shutting_down && !self.slots[worker].alive {
                    if let Err(err) = self.start(worker) {
                        error!(target: "cluster", worker, "cannot restart worker: {err}");
                        self.schedule_restart(worker);
                    }
                }
                None
            }
            other => self.on_side_event(other),
        }
    }

    /// Acts on a message already checked by [`validate::check`]; `retiring` when it
    /// comes from a process that a reload drains (see [`super::reload`]).
    pub(super) fn on_message(
        &mut self,
        worker: usize,
        message: Message,
        frame: EncodedFrame,
        retiring: bool,
    ) {
        match &message {
            Message::Hello { version, pid, .. } => {
                if let Some((m, _)) = &self.metrics {
                    m.on_hello(worker);
                }
                let slot = &mut self.slots[worker];
                slot.said_hello = true;
                slot.last_heartbeat = Instant::now();
                if *pid != slot.pid {
                    // Only logged: the primary signals its Child, never a reported pid.
                    debug!(target: "cluster", worker, "hello says pid {pid}, spawned pid {}", slot.pid);
                }
                if !validate::version_matches(&message) {
                    error!(target: "cluster", worker, "worker speaks ipc protocol {version}, primary {}: stopping it", rsio_ipc::PROTOCOL_VERSION);
                    if let Some(s) = &slot.sender {
                        let _ = s.send(Message::Drain);
                    }
                }
            }
            Message::Ready => {
                self.slots[worker].ready = true;
                self.sync_metrics();
                let slot = &mut self.slots[worker];
                slot.last_heartbeat = Instant::now();
                let port = self.config.worker_port(worker);
                info!(target: "cluster", "worker {worker} (pid {}) listening on http://{}:{port}", slot.pid, self.config.host);
                if !self.announced_ready && self.slots.iter().all(|s| s.ready) {
                    self.announced_ready = true;
                    let (first, last) = (
                        self.config.worker_port(0),
                        self.config.worker_port(self.slots.len() - 1),
                    );
                    if self.config.shared_port {
                        info!(target: "cluster", "ready: http://{}:{} shared by {} workers (their own ports {first}..{last})", self.config.host, self.config.port, self.slots.len());
                    } else {
                        info!(target: "cluster", "ready: http://{}:{first}..{last} ({} workers)", self.config.host, self.slots.len());
                    }
                    notify::ready(&self.status_line());
                } else {
                    self.report_status();
                }
            }
            Message::Stats { connections } => {
                let slot = &mut self.slots[worker];
                slot.connections = *connections;
                slot.routed_new = 0;
            }
            Message::Metrics {
                counters,
                gauges,
                namespaces,
            } => {
                if let Some((m, ipc)) = &mut self.metrics {
                    let bytes = std::mem::take(&mut ipc[worker]);
                    m.on_report(
                        worker,
                        counters.clone(),
                        gauges.clone(),
                        namespaces.clone(),
                        bytes,
                    );
                }
            }
            Message::RoomInterest { nsp, room, present } => {
                self.interest.set(worker, nsp, room, *present)
            }
            Message::Heartbeat => self.slots[worker].last_heartbeat = Instant::now(),
            // A draining process was not waited for once it was replaced.
            Message::Fence { id } if !retiring => self.fenced(worker, *id),
            // A draining process keeps its broadcasts on the primary's path.
            Message::FenceRequest { id } if !retiring => self.fence_request(worker, *id),
            // A draining process's uids are of no use: it publishes no more.
            Message::RedisMember {
                nsp,
                uid,
                own_entries,
            } if !retiring => {
                let generation = self.slots[worker].generation;
                self.redis_member(worker, generation, nsp, uid, *own_entries)
            }
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
                // `from` is the sender (checked).
                match EncodedFrame::encode(&answer, DEFAULT_MAX_FRAME_LENGTH) {
                    Ok(frame) => self.send_to(worker, frame),
                    Err(err) => {
                        warn!(target: "cluster", worker, "cannot answer a session restore: {err}")
                    }
                }
            }
            Message::LinkStuck { lane, epoch } => {
                self.link_stuck(worker, retiring, *lane as usize, *epoch)
            }
            Message::Broadcast(b) if b.offset.is_some() => self.relay_sequenced(worker, b),
            _ => {
                if let Some(to) = message.is_response() {
                    // Responses go to the requester only (an existing worker: checked).
                    self.send_to(to as usize, frame);
                } else if message.is_relayed() {
                    self.relay(worker, retiring, &message, frame);
                }
            }
        }
    }

    pub(super) fn begin_shutdown(&mut self) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        self.sync_metrics();
        notify::stopping();
        self.stop_reload();
        for slot in &self.slots {
            if let Some(s) = &slot.sender {
                let _ = s.send(Message::Drain);
            }
        }
    }

    async fn shutdown_now(&mut self) {
        self.begin_shutdown();
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.kill_all();
        // Let the tasks that own the children deliver the kills (dropping a `Child`
        // kills it too: `kill_on_drop`).
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    fn status_line(&self) -> String {
        let live = self.slots.iter().filter(|s| s.ready).count();
        let connections: u64 = self.slots.iter().map(|s| s.connections).sum();
        format!(
            "{live}/{} workers, {connections} connections",
            self.slots.len()
        )
    }

    /// Tells `/health` which workers serve and whether the cluster drains.
    fn sync_metrics(&self) {
        if let Some((m, _)) = &self.metrics {
            m.set_status(self.slots.iter().map(|s| s.ready), self.shutting_down);
        }
    }

    pub(super) fn report_status(&self) {
        notify::status(&self.status_line());
    }
}
