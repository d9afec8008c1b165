//! A worker: one process, one core, one single-threaded runtime, serving its
//! inherited listener with the application's router.

use std::{
    future::Future,
    process::ExitCode,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::Duration,
};

use rsio_ipc::{
    IpcConnection, IpcSender, Message, SendError, WorkerIndex, DEFAULT_MAX_FRAME_LENGTH,
    PROTOCOL_VERSION,
};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::Notify,
};
use tracing::{error, info, warn};

use super::{
    config::ClusterConfig,
    inherited::{use_hints, Inherited, EXIT_NOT_STARTED_BY_PRIMARY},
    spawn::{allowed_cpus, pin_current_thread, unpin_current_thread, CPU_ENV},
    BoxError,
};
use crate::{
    adapter::{Adapter, BroadcastOptions, ClusterLink, EncodedPacket},
    http::{serve_with_handoff, ServeConfig},
    server::{Server, ServerConfig},
};

/// How long a draining worker waits for its closed sessions to end.
const DRAIN_SESSIONS: Duration = Duration::from_secs(3);
/// How often a worker tells the primary that its event loop runs.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// Heartbeats between two connection counts sent to the primary (for the shared
/// port's routing and the status line).
const STATS_EVERY_BEATS: u64 = 2;
/// Why [`WorkerContext::server`] made no server.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The worker already has its server.
    #[error(
        "this worker already has a server: cross-worker messages name a namespace, not a \
         server, so a worker carries the traffic of one server only; add namespaces to the \
         first server instead"
    )]
    SecondServer,
    /// `--redis` is set, but this worker cannot be a member of the Redis cluster.
    #[error(transparent)]
    Redis(#[from] super::redis::RedisJoinError),
}

/// What an application's worker gets: its place in the cluster, and the way to
/// make the server whose broadcasts reach every worker.
#[derive(Clone)]
pub struct WorkerContext {
    /// This worker's index, 0-based; it serves [`WorkerContext::port`].
    pub index: usize,
    /// Workers in the cluster.
    pub count: usize,
    /// The cluster's resolved options.
    pub config: ClusterConfig,
    link: Arc<ClusterLink>,
    servers: Arc<Mutex<Vec<Server>>>,
    /// With `--redis`, the server's membership, fed by the primary's reader.
    redis: Arc<OnceLock<Arc<super::redis::Member>>>,
    /// With `--redis`, the entries and messages the primary forwarded.
    redis_received: Arc<AtomicU64>,
    /// To the primary.
    sender: IpcSender,
}

impl WorkerContext {
    /// The worker's Socket.IO server, using the cluster adapter (with `--redis`,
    /// the Redis adapter: the worker is then a member of the Redis cluster, as a
    /// Node server is, and its sessions and offsets live in Redis). It is closed
    /// ("server shutting down") when the worker drains.
    ///
    /// The cluster's `--allowed-origins`, `--max-send-queue-bytes` and
    /// `--trust-proxy` apply where `config.engine` keeps the library defaults.
    ///
    /// A worker has one server: cross-worker messages name a namespace, not a
    /// server, so a second one could not get its share of them; asking for it is
    /// [`WorkerError::SecondServer`]. Serve several namespaces from the one server.
    pub fn server(&self, mut config: ServerConfig) -> Result<Server, WorkerError> {
        // Held until the server is attached: a concurrent second call waits, then fails.
        let mut servers = self.servers.lock().unwrap_or_else(|e| e.into_inner());
        if !servers.is_empty() {
            return Err(WorkerError::SecondServer);
        }
        let defaults = crate::engine::EngineConfig::default();
        if config.engine.allowed_origins == defaults.allowed_origins {
            config.engine.allowed_origins = self.config.allowed_origins.clone();
        }
        if config.engine.max_send_queue_bytes == defaults.max_send_queue_bytes {
            config.engine.max_send_queue_bytes = self.config.max_send_queue_bytes;
        }
        config.engine.trust_proxy |= self.config.trust_proxy;
        if self.config.admin_ui_hosted {
            admit_hosted_admin_ui(&mut config);
        }
        let server = match &self.config.redis {
            // A member of the Redis cluster: sessions and offsets live in Redis,
            // other workers of this host are members like any other.
            Some(options) => {
                let member = super::redis::member(options)?;
                // The primary reads the broadcasts for the host; it needs to
                // know this worker's uids not to send it back its own, but for
                // what it delivers when it reads them back (recovery offsets).
                let own_entries = options.adapter == super::RedisAdapterKind::Streams
                    && config.connection_state_recovery.is_some();
                let sender = self.sender.clone();
                member.fed_by_primary(move |nsp, uid| {
                    let _ = sender.send(Message::RedisMember {
                        nsp: nsp.to_string(),
                        uid: uid.to_string(),
                        own_entries,
                    });
                });
                // A broadcast Redis never got reaches this host's other
                // workers over the ipc socket, relayed by the primary.
                let link = Arc::downgrade(&self.link);
                member.relay_for_host(Arc::new(
                    move |nsp: &str, packet: &EncodedPacket, opts: &BroadcastOptions| {
                        if let Some(link) = link.upgrade() {
                            link.relay_broadcast(nsp, packet, opts);
                        }
                    },
                ));
                // Its rooms in the hints: the primary forwards a room
                // broadcast only to the workers with members.
                member.count_rooms_in(&self.link);
                let member = Arc::new(member);
                let server = Server::with_adapter(config, member.factory());
                member.clone().attach(&server, options);
                // What the primary read on Redis goes to it from now on.
                let _ = self.redis.set(member);
                server
            }
            None => {
                if let Some(recovery) = config.connection_state_recovery {
                    // Offsets and sessions live in the primary, so they survive any one worker.
                    self.link.enable_recovery(recovery);
                }
                let link = self.link.clone();
                Server::with_adapter(
                    config,
                    Arc::new(move |nsp: &str| link.adapter(nsp) as Arc<dyn Adapter>),
                )
            }
        };
        self.link
            .attach(&server)
            .map_err(|_| WorkerError::SecondServer)?;
        if let Some(auth) = &self.config.admin_ui {
            let options = crate::admin::AdminOptions::for_worker(
                auth.clone(),
                self.config.admin_ui_readonly,
                self.index,
            );
            crate::admin::instrument(&server, options);
        }
        servers.push(server.clone());
        Ok(server)
    }

    /// Operations of other workers aimed at sockets that reached this worker
    /// (broadcasts, joins, leaves, disconnects, fetches): the primary relays
    /// those aimed at rooms only to workers with members of them.
    pub fn relayed_operations(&self) -> u64 {
        self.link.relayed()
    }

    /// Room broadcasts of this worker that never left it: by the interest
    /// hints, no other worker had a member of their rooms.
    pub fn kept_local_broadcasts(&self) -> u64 {
        self.link.kept_local()
    }

    /// Broadcasts of other workers this one received straight from them (also
    /// counted in [`WorkerContext::relayed_operations`]), and the frames it
    /// sent straight to others, one per receiving process: the primary relayed
    /// neither.
    pub fn direct_broadcasts(&self) -> (u64, u64) {
        self.link.direct_counts()
    }

    /// Answers to this worker's acked broadcasts (client counts and client
    /// acks) that came straight back over the direct links: the primary
    /// relayed none of them.
    pub fn direct_answers(&self) -> u64 {
        self.link.direct_answers()
    }

    /// With `--redis`: the stream entries or channel messages read on Redis
    /// that the primary forwarded to this worker (a room broadcast reaches
    /// only the workers with members of its rooms).
    pub fn redis_received(&self) -> u64 {
        self.redis_received.load(Ordering::Relaxed)
    }

    /// The port this worker serves itself: `config.port + index`, or
    /// `config.port + 1 + index` behind a shared port.
    pub fn port(&self) -> u16 {
        self.config.worker_port(self.index)
    }
}

/// `--admin-ui-hosted`: the page at <https://admin.socket.io> may open sessions (its
/// origin is allowed) and read the polling answers with credentials (CORS), unless
/// the application set its own CORS policy.
fn admit_hosted_admin_ui(config: &mut ServerConfig) {
    use crate::engine::{AllowedOrigins, CorsOptions, CorsOrigin};
    let hosted = crate::admin::HOSTED_ORIGIN.to_string();
    if let AllowedOrigins::SameOriginAnd(list) = &mut config.engine.allowed_origins {
        if !list.contains(&hosted) {
            list.push(hosted.clone());
        }
    }
    if config.engine.cors.is_none() {
        config.engine.cors = Some(CorsOptions {
            origin: CorsOrigin::List(vec![hosted]),
            credentials: true,
        });
    }
}

/// The admin UI's page under `/admin/`, when the admin UI is on and its files are
/// found (otherwise only its namespace works, e.g. for the hosted page).
fn with_admin_page(router: axum::Router, config: &ClusterConfig) -> axum::Router {
    if config.admin_ui.is_none() {
        return router;
    }
    let files = crate::admin::ui::find_dist(config.admin_ui_dist.as_deref())
        .and_then(|dir| crate::admin::ui::load(&dir));
    match files {
        Ok(files) => router.merge(crate::admin::ui::router(files)),
        Err(err) => {
            warn!(target: "cluster", "admin UI page not served: {err}");
            router
        }
    }
}

/// Sends a heartbeat every [`HEARTBEAT_EVERY`], and the connection count every
/// [`STATS_EVERY_BEATS`] of them (one timer for both: an idle worker wakes once a
/// second); drains the worker when the primary stopped reading (its backlog passed
/// the limit: cluster messages are lost from now on, so the clients had better
/// reconnect to a worker that is heard).
async fn heartbeat(sender: IpcSender, drain: Arc<Notify>, servers: Arc<Mutex<Vec<Server>>>) {
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for beat in 1u64.. {
        tick.tick().await;
        let mut result = sender.send(Message::Heartbeat);
        if result.is_ok() && beat % STATS_EVERY_BEATS == 0 {
            let connections = servers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|s| s.engine().clients_count() as u64)
                .sum();
            result = sender.send(Message::Stats { connections });
        }
        match result {
            Ok(()) => {}
            Err(SendError::Backlog { limit }) => {
                error!(target: "cluster", "the primary does not read (backlog over {limit} bytes); draining");
                drain.notify_one();
                return;
            }
            Err(_) => return,
        }
    }
}

/// Runs worker `index`: returns the process's exit status.
pub(crate) fn run<F, Fut>(index: usize, count: usize, config: ClusterConfig, app: F) -> ExitCode
where
    F: FnOnce(WorkerContext) -> Fut,
    Fut: Future<Output = Result<axum::Router, BoxError>>,
{
    // Started by hand with the worker's environment, descriptors 3 and 4 may be
    // anything (a file, a terminal, nothing): refuse rather than use them.
    let fds = match Inherited::take(config.shared_port) {
        Ok(fds) => fds,
        Err(err) => {
            // Not through `tracing`: the log filter could hide why the process exits.
            eprintln!("rsio: {err}");
            return ExitCode::from(EXIT_NOT_STARTED_BY_PRIMARY);
        }
    };
    if config.shared_port {
        // The primary routes a request by the worker its sid names.
        crate::engine::sid::set_worker_tag(index);
    }
    let cpus = allowed_cpus();
    if let Some(cpu) = std::env::var(CPU_ENV).ok().and_then(|c| c.parse().ok()) {
        if let Err(err) = pin_current_thread(cpu) {
            warn!(target: "cluster", "cannot pin to CPU {cpu}: {err}");
        }
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Blocking work (e.g. SQLite) runs on other threads, free to use any core.
        .on_thread_start(move || unpin_current_thread(&cpus))
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(err) => {
            error!(target: "cluster", "cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run_async(index, count, config, fds, app)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(target: "cluster", "worker failed: {err}");
            ExitCode::FAILURE
        }
    }
}

async fn run_async<F, Fut>(
    index: usize,
    count: usize,
    config: ClusterConfig,
    fds: Inherited,
    app: F,
) -> Result<(), BoxError>
where
    F: FnOnce(WorkerContext) -> Fut,
    Fut: Future<Output = Result<axum::Router, BoxError>>,
{
    let Inherited {
        listener,
        ipc,
        handoff,
        hints,
        links,
    } = fds;
    listener.set_nonblocking(true)?;
    ipc.set_nonblocking(true)?;
    let (mut reader, sender) = IpcConnection::with_limits(
        tokio::net::UnixStream::from_std(ipc)?,
        DEFAULT_MAX_FRAME_LENGTH,
        config.max_ipc_backlog_bytes,
    )
    .into_split();
    sender.send(Message::Hello {
        version: PROTOCOL_VERSION,
        worker: index as WorkerIndex,
        pid: std::process::id(),
    })?;
    let link = ClusterLink::new(index as WorkerIndex, count, sender.clone());
    if let Some(fd) = hints {
        use_hints(&link, &fd, links, config.max_ipc_backlog_bytes);
    }
    let drain = Arc::new(Notify::new());
    // From this loop, so that it stops when the loop is stuck (a handler that blocks
    // the thread): the primary then kills and restarts this worker.
    let ctx = WorkerContext {
        index,
        count,
        config: config.clone(),
        link: link.clone(),
        servers: Arc::default(),
        redis: Arc::default(),
        redis_received: Arc::default(),
        sender: sender.clone(),
    };
    let servers = ctx.servers.clone();
    let redis = ctx.redis.clone();
    let redis_received = ctx.redis_received.clone();
    tokio::spawn(heartbeat(sender.clone(), drain.clone(), servers.clone()));

    // Messages from the primary: adapter traffic, and the order to drain.
    let drain_on_message = drain.clone();
    let retiring = Arc::new(AtomicBool::new(false));
    let retire_on_message = retiring.clone();
    let dispatch_link = link.clone();
    tokio::spawn(async move {
        loop {
            match reader.next().await {
                Some(Ok(Message::Drain)) => {
                    drain_on_message.notify_one();
                }
                Some(Ok(Message::Retire)) => {
                    retire_on_message.store(true, Ordering::Relaxed);
                    drain_on_message.notify_one();
                }
                Some(Ok(message @ (Message::RedisEntry { .. } | Message::RedisMessage { .. }))) => {
                    redis_received.fetch_add(1, Ordering::Relaxed);
                    // Before the server exists there is nobody to deliver to.
                    if let Some(member) = redis.get() {
                        member.feed(&message);
                    }
                }
                Some(Ok(message)) => dispatch_link.dispatch(message),
                Some(Err(err)) => {
                    warn!(target: "cluster", "ipc: {err}");
                    break;
                }
                None => break,
            }
        }
        // The primary is gone: a worker never outlives it.
        warn!(target: "cluster", "primary gone; draining");
        drain_on_message.notify_one();
    });

    let router = with_admin_page(app(ctx).await?, &config);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    sender.send(Message::Ready)?;

    if config.metrics.is_some() {
        tokio::spawn(crate::metrics::measure_lag());
        tokio::spawn(crate::metrics::report(servers.clone(), sender.clone()));
    }
    let (mut term, mut int) = (
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    );
    // A worker retired by a reload stops accepting first: from then on, new
    // connections wait in the listen backlog (the primary holds the listener) for
    // the process that replaces it, instead of reaching sessions about to close. A
    // worker that drains for a shutdown keeps serving until its sessions are gone,
    // so a client between two polls still fetches its `close` packet on a new
    // connection, and `GET /health` answers 503 meanwhile.
    let health_draining = Arc::new(AtomicBool::new(false));
    let draining_flag = health_draining.clone();
    let (draining, drained) = tokio::sync::oneshot::channel::<()>();
    let (sessions_gone_tx, sessions_gone_rx) = tokio::sync::oneshot::channel::<()>();
    let stop_accepting = async move {
        tokio::select! {
            _ = drain.notified() => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        info!(target: "cluster", "draining");
        draining_flag.store(true, Ordering::Relaxed);
        let _ = draining.send(());
        if !retiring.load(Ordering::Relaxed) {
            let _ = sessions_gone_rx.await;
        }
    };
    let close_sessions = async move {
        if drained.await.is_err() {
            return; // serve failed: there is nothing to drain
        }
        let servers = servers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        for server in &servers {
            server.close();
        }
        // Keep the open connections until the closed sessions are gone: a polling
        // client with a GET in flight still fetches its `close` packet.
        let sessions_gone = async {
            while servers.iter().any(|s| s.engine().clients_count() > 0) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        if tokio::time::timeout(DRAIN_SESSIONS, sessions_gone)
            .await
            .is_err()
        {
            warn!(target: "cluster", "sessions still open after {DRAIN_SESSIONS:?}; stopping anyway");
        }
        let _ = sessions_gone_tx.send(());
    };
    let serve_config = ServeConfig {
        max_connections: config.max_connections,
        health: Some(health_draining),
        ..ServeConfig::default()
    };
    // Handed-off connections queue in the socketpair while this is full.
    let handed = handoff.map(|sock| {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(super::shared_port::receive_loop(sock, tx));
        rx
    });
    let (served, ()) = tokio::join!(
        serve_with_handoff(listener, handed, router, serve_config, stop_accepting),
        close_sessions
    );
    served?;
    info!(target: "cluster", "worker stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rsio_ipc::EventPayload;

    use super::*;
    use crate::{adapter::RecoveryConfig, cluster::ClusterArgs};

    fn context() -> (WorkerContext, rsio_ipc::IpcReader) {
        let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
        let (_, sender) = IpcConnection::new(ours).into_split();
        // The primary's end stays open while the test runs.
        let primary = IpcConnection::new(theirs).into_split().0;
        let config = ClusterArgs {
            workers: Some(2),
            ..ClusterArgs::default()
        };
        let ctx = WorkerContext {
            index: 0,
            count: 2,
            config: config.resolve().unwrap(),
            link: ClusterLink::new(0, 2, sender.clone()),
            servers: Arc::default(),
            redis: Arc::default(),
            redis_received: Arc::default(),
            sender,
        };
        (ctx, primary)
    }

    #[tokio::test]
    async fn a_second_server_is_refused_and_the_first_keeps_the_cluster_traffic() {
        let (ctx, _primary) = context();
        let first = ctx.server(ServerConfig::default()).unwrap();
        let second = ctx.server(ServerConfig {
            connection_state_recovery: Some(RecoveryConfig::default()),
            ..ServerConfig::default()
        });
        let err = second.err().expect("a second server is refused");
        assert!(matches!(err, WorkerError::SecondServer));
        assert!(err.to_string().contains("one server"), "{err}");
        assert!(
            !ctx.link.adapter("/").sequenced(),
            "the refused server's recovery config counts for nothing"
        );
        assert_eq!(ctx.servers.lock().unwrap().len(), 1);
        // What other workers send still reaches the first server's namespaces.
        let heard = Arc::new(AtomicUsize::new(0));
        let count = heard.clone();
        first.of("/").on_server_side("hello", move |_, _| {
            count.fetch_add(1, Ordering::SeqCst);
            async {}
        });
        ctx.link.dispatch(Message::ServerSideEmit {
            nsp: "/".into(),
            event: "hello".into(),
            payload: EventPayload {
                json: bytes::Bytes::from_static(b"[]"),
                attachments: Vec::new(),
            },
            from: 1,
            request: None,
        });
        assert_eq!(heard.load(Ordering::SeqCst), 1);
    }
}
