//! The Redis layer both adapters are built on (as Node's adapters share
//! `ClusterAdapter`): the command connection (one Redis, or a Redis Cluster),
//! made on demand with backoff; the writer task sending queued commands as
//! pipelines; the subscriber connection (channels and patterns, restored after a
//! reconnect); and the server count (`PUBSUB NUMSUB`, summed over the nodes of a
//! cluster, as Node's adapter does through ioredis' `Cluster.nodes()`).

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Mutex, MutexGuard, Weak,
    },
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use redis::{
    aio::{ConnectionLike, MultiplexedConnection},
    cluster::{ClusterClient, ClusterClientBuilder},
    cluster_async::ClusterConnection,
    AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::RedisAdapterError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most commands the writer sends in one pipeline.
const BATCH: usize = 256;
/// How often the subscriber connection is checked with a PING.
const PING_EVERY: Duration = Duration::from_secs(5);
/// How often the number of servers (`PUBSUB NUMSUB`) is refreshed.
const COUNT_EVERY: Duration = Duration::from_millis(1000);

/// A subscription of the subscriber connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sub {
    /// `SUBSCRIBE`.
    Channel(String),
    /// `PSUBSCRIBE`.
    Pattern(String),
}

/// What an adapter built on a [`Link`] provides to its loops.
pub(crate) trait Member: Send + Sync + 'static {
    /// Its link.
    fn link(&self) -> &Link;
    /// A message on a subscribed channel (or one matching a pattern).
    fn on_pubsub(&self, channel: &str, payload: &[u8]);
    /// The channels whose subscriber counts are the server counts.
    fn counted_channels(&self) -> Vec<String>;
    /// The subscriber counts of [`Member::counted_channels`], refreshed.
    fn set_counts(&self, counts: &HashMap<String, usize>);
    /// Runs on the new command connection after a command failed with its
    /// outcome unknown, before anything else is written on it.
    fn after_unknown_failure<'a>(&'a self, _conn: &'a mut Conn) -> RedisFuture<'a, ()> {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// How a queued command failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// Never sent: Redis could not be reached.
    NotSent,
    /// Sent, but the connection broke before the reply: Redis may have run it
    /// (and, with persistence, may still have it after a restart).
    Unknown,
}

/// What to do with a command that failed (it is handed back).
pub(crate) type OnFail = Box<dyn FnOnce(Failure, &Cmd) + Send>;

/// A command for the writer task, and what to do if it cannot reach Redis.
pub(crate) struct Outgoing {
    pub(crate) cmd: Cmd,
    pub(crate) on_fail: Option<OnFail>,
}

/// Where Redis is.
enum Target {
    Single(redis::Client),
    /// A Redis Cluster: commands through redis-rs' cluster client; the
    /// subscriber on one node at a time (PUBLISH reaches every node).
    Cluster {
        client: Box<ClusterClient>,
        nodes: Vec<redis::Client>,
    },
}

/// A command connection to one Redis or to a cluster.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The receiving ends the loops take when the member starts.
struct Receivers {
    out_rx: mpsc::UnboundedReceiver<Outgoing>,
    sub_rx: mpsc::UnboundedReceiver<Sub>,
}

/// Doubling backoff, logged once per failure streak.
pub(crate) struct Backoff {
    delay: Duration,
    failing: bool,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            delay: BACKOFF_MIN,
            failing: false,
        }
    }

    pub(crate) async fn failed(&mut self, what: &str, err: &redis::RedisError) {
        if self.failing {
            debug!(target: "socket.io:redis", "{what}: {err}; retrying in {:?}", self.delay);
        } else {
            warn!(target: "socket.io:redis", "{what}: {err}; retrying with backoff");
            self.failing = true;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }

    pub(crate) fn succeeded(&mut self, what: &str) {
        if self.failing {
            warn!(target: "socket.io:redis", "{what}: connected again");
        }
        *self = Backoff::new();
    }
}

/// Connection options: a reply is awaited at most `response`, then the
/// connection counts as broken.
pub(crate) fn connection_config(response: Duration) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(response))
}

/// One server's connections to Redis, shared by the adapters of its namespaces.
pub(crate) struct Link {
    target: Target,
    conn: tokio::sync::Mutex<Option<Conn>>,
    /// After a failed attempt, no new one before this instant.
    retry_at: Mutex<Option<(Instant, Duration)>>,
    outgoing: mpsc::UnboundedSender<Outgoing>,
    subscribe: mpsc::UnboundedSender<Sub>,
    /// Every subscription so far, made again after a reconnect.
    subscriptions: Mutex<Vec<Sub>>,
    receivers: Mutex<Option<Receivers>>,
    /// How many loops (the subscriber, and the member's own) connected once.
    pub(crate) ready: watch::Sender<usize>,
    started: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Link {
    fn with_target(target: Target) -> Link {
        let (outgoing, out_rx) = mpsc::unbounded_channel();
        let (subscribe, sub_rx) = mpsc::unbounded_channel();
        Link {
            target,
            conn: tokio::sync::Mutex::new(None),
            retry_at: Mutex::new(None),
            outgoing,
            subscribe,
            subscriptions: Mutex::default(),
            receivers: Mutex::new(Some(Receivers { out_rx, sub_rx })),
            ready: watch::channel(0).0,
            started: AtomicBool::new(false),
        }
    }

    /// One Redis (`redis://host:port[/db]`).
    pub(crate) fn single(url: &str) -> Result<Link, RedisAdapterError> {
        let client = redis::Client::open(url).map_err(RedisAdapterError::Url)?;
        Ok(Link::with_target(Target::Single(client)))
    }

    /// A Redis Cluster reached through any of `urls` (its nodes).
    pub(crate) fn cluster(urls: &[&str]) -> Result<Link, RedisAdapterError> {
        if urls.is_empty() {
            return Err(RedisAdapterError::NoNodes);
        }
        let nodes = urls
            .iter()
            .map(|u| redis::Client::open(*u))
            .collect::<Result<Vec<_>, _>>()
            .map_err(RedisAdapterError::Url)?;
        let client = ClusterClientBuilder::new(urls.to_vec())
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .build()
            .map_err(RedisAdapterError::Url)?;
        Ok(Link::with_target(Target::Cluster {
            client: Box::new(client),
            nodes,
        }))
    }

    /// The client of a single Redis (`None` for a cluster).
    pub(crate) fn client(&self) -> Option<&redis::Client> {
        match &self.target {
            Target::Single(c) => Some(c),
            Target::Cluster { .. } => None,
        }
    }

    /// The command connection, connecting if needed (at most once per backoff step).
    pub(crate) async fn conn(&self) -> redis::RedisResult<Conn> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let wait = *lock(&self.retry_at);
        if let Some((at, _)) = wait.filter(|(at, _)| Instant::now() < *at) {
            let left = at.saturating_duration_since(Instant::now());
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "redis unreachable",
                format!("next attempt in {left:?}"),
            )));
        }
        let made = match &self.target {
            Target::Single(client) => client
                .get_multiplexed_async_connection_with_config(&connection_config(RESPONSE_TIMEOUT))
                .await
                .map(Conn::Single),
            Target::Cluster { client, .. } => {
                client.get_async_connection().await.map(Conn::Cluster)
            }
        };
        match made {
            Ok(c) => {
                *lock(&self.retry_at) = None;
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(err) => {
                let step = wait.map_or(BACKOFF_MIN, |(_, d)| (d * 2).min(BACKOFF_MAX));
                *lock(&self.retry_at) = Some((Instant::now() + step, step));
                warn!(target: "socket.io:redis", "redis command connection: {err}");
                Err(err)
            }
        }
    }

    /// Forgets a command connection that failed, so the next use reconnects.
    pub(crate) async fn conn_failed(&self, err: &redis::RedisError) {
        if err.is_io_error() || err.is_connection_dropped() || err.is_timeout() {
            *self.conn.lock().await = None;
        }
    }

    /// Queues a command; `on_fail` runs if Redis cannot be reached for it.
    pub(crate) fn send(&self, cmd: Cmd, on_fail: Option<OnFail>) {
        let _ = self.outgoing.send(Outgoing { cmd, on_fail });
    }

    /// Queues `PUBLISH <channel> <payload>`.
    pub(crate) fn publish(&self, channel: &str, payload: impl redis::ToRedisArgs) {
        self.publish_or(channel, payload, None);
    }

    /// Queues `PUBLISH <channel> <payload>`; `on_fail` runs if Redis cannot be reached for it.
    pub(crate) fn publish_or(
        &self,
        channel: &str,
        payload: impl redis::ToRedisArgs,
        on_fail: Option<OnFail>,
    ) {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        self.send(cmd, on_fail);
    }

    /// Adds a subscription (kept for reconnects).
    pub(crate) fn subscribe(&self, sub: Sub) {
        let mut subs = lock(&self.subscriptions);
        if subs.contains(&sub) {
            return;
        }
        subs.push(sub.clone());
        let _ = self.subscribe.send(sub);
    }

    /// Subscriber counts of `channels`, summed over the nodes of a cluster.
    pub(crate) async fn numsub(
        &self,
        channels: &[String],
    ) -> redis::RedisResult<HashMap<String, usize>> {
        let mut c = self.conn().await?;
        let mut cmd = redis::cmd("PUBSUB");
        cmd.arg("NUMSUB").arg(channels);
        // redis-rs sends it to every node of a cluster and sums the counts.
        match cmd.query_async::<HashMap<String, usize>>(&mut c).await {
            Ok(r) => Ok(r),
            Err(err) => {
                self.conn_failed(&err).await;
                Err(err)
            }
        }
    }

    /// Waits until `want` loops have connected once (or `timeout`); whether they did.
    pub(crate) async fn ready(&self, want: usize, timeout: Duration) -> bool {
        let mut rx = self.ready.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= want))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Starts the writer, the subscriber and the server count loops of
    /// `member` (on the current tokio runtime); false if they already run.
    pub(crate) fn start(&self, member: Weak<dyn Member>) -> bool {
        if self.started.swap(true, Ordering::AcqRel) {
            return false;
        }
        let Some(r) = lock(&self.receivers).take() else {
            return false;
        };
        tokio::spawn(writer(member.clone(), r.out_rx));
        tokio::spawn(subscriber(member.clone(), r.sub_rx));
        tokio::spawn(count_servers(member));
        true
    }

    #[cfg(test)]
    pub(crate) fn subscriptions_for_test(&self) -> Vec<Sub> {
        lock(&self.subscriptions).clone()
    }

    /// The commands queued so far, as their arguments (before the loops start).
    #[cfg(test)]
    pub(crate) fn queued_for_test(&self) -> Vec<Vec<Vec<u8>>> {
        let mut receivers = lock(&self.receivers);
        let Some(r) = receivers.as_mut() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        while let Ok(item) = r.out_rx.try_recv() {
            out.push(
                item.cmd
                    .args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(b) => b.to_vec(),
                        _ => Vec::new(),
                    })
                    .collect(),
            );
        }
        out
    }

    /// A pub/sub connection: to the one Redis, or to the `attempt`-th node.
    async fn pubsub(&self, attempt: usize) -> redis::RedisResult<redis::aio::PubSub> {
        let client = match &self.target {
            Target::Single(c) => c,
            Target::Cluster { nodes, .. } => &nodes[attempt % nodes.len()],
        };
        client.get_async_pubsub().await
    }
}

/// Sends queued commands in order, as pipelines of what is queued.
async fn writer(member: Weak<dyn Member>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let mut batch = Vec::with_capacity(BATCH);
    // A command failed with its outcome unknown: the member is told on the next connection.
    let mut unknown = false;
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let Some(m) = member.upgrade() else { return };
        let mut pipe = redis::pipe();
        for item in &batch {
            pipe.add_command(item.cmd.clone()).ignore();
        }
        if let Err((failure, err)) = write(&*m, &pipe, &mut unknown).await {
            unknown |= failure == Failure::Unknown;
            debug!(target: "socket.io:redis", "{} command(s) failed ({failure:?}): {err}", batch.len());
            for item in batch.drain(..) {
                if let Some(f) = item.on_fail {
                    f(failure, &item.cmd);
                }
            }
        }
        batch.clear();
    }
}

/// Sends `pipe` (after [`Member::after_unknown_failure`] if `unknown`).
async fn write(
    m: &dyn Member,
    pipe: &Pipeline,
    unknown: &mut bool,
) -> Result<(), (Failure, redis::RedisError)> {
    let link = m.link();
    let mut c = link.conn().await.map_err(|e| (Failure::NotSent, e))?;
    if *unknown {
        if let Err(err) = m.after_unknown_failure(&mut c).await {
            link.conn_failed(&err).await;
            return Err((Failure::NotSent, err));
        }
        *unknown = false;
    }
    if let Err(err) = pipe.query_async::<()>(&mut c).await {
        link.conn_failed(&err).await;
        return Err((Failure::Unknown, err));
    }
    Ok(())
}

async fn subscribe_all(sink: &mut redis::aio::PubSubSink, subs: &[Sub]) -> redis::RedisResult<()> {
    let (mut channels, mut patterns) = (Vec::new(), Vec::new());
    for s in subs {
        match s {
            Sub::Channel(c) => channels.push(c.as_str()),
            Sub::Pattern(p) => patterns.push(p.as_str()),
        }
    }
    if !channels.is_empty() {
        sink.subscribe(&channels).await?;
    }
    if !patterns.is_empty() {
        sink.psubscribe(&patterns).await?;
    }
    Ok(())
}

/// A pub/sub connection (to the `attempt`-th node of a cluster) with every
/// subscription so far, within [`RESPONSE_TIMEOUT`].
async fn subscribed(
    link: &Link,
    attempt: usize,
) -> redis::RedisResult<(redis::aio::PubSubSink, redis::aio::PubSubStream)> {
    let connect = async {
        let (mut sink, stream) = link.pubsub(attempt).await?.split();
        let subs = lock(&link.subscriptions).clone();
        subscribe_all(&mut sink, &subs).await?;
        Ok((sink, stream))
    };
    tokio::time::timeout(RESPONSE_TIMEOUT, connect)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
}

/// The subscriber connection: every subscription of the member; on a cluster,
/// the next node after a failure. A PING every [`PING_EVERY`] finds a
/// connection Redis dropped without closing it (it would wait for ever).
async fn subscriber(member: Weak<dyn Member>, mut sub_rx: mpsc::UnboundedReceiver<Sub>) {
    let mut backoff = Backoff::new();
    let mut first = true;
    let mut attempt = 0;
    loop {
        let Some(m) = member.upgrade() else { return };
        attempt += 1;
        // Every subscription so far (new ones also arrive through sub_rx).
        // Drained first: what is queued is in the list too.
        while sub_rx.try_recv().is_ok() {}
        let (mut sink, mut stream) = match subscribed(m.link(), attempt).await {
            Ok(split) => split,
            Err(err) => {
                drop(m);
                backoff.failed("redis subscriber", &err).await;
                continue;
            }
        };
        backoff.succeeded("redis subscriber");
        if std::mem::take(&mut first) {
            m.link().ready.send_modify(|r| *r += 1);
        }
        drop(m);
        let mut ping =
            tokio::time::interval_at(tokio::time::Instant::now() + PING_EVERY, PING_EVERY);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let Some(m) = member.upgrade() else { return };
                    m.on_pubsub(msg.get_channel_name(), msg.get_payload_bytes());
                }
                sub = sub_rx.recv() => {
                    let Some(sub) = sub else { return };
                    if let Err(err) = subscribe_all(&mut sink, std::slice::from_ref(&sub)).await {
                        debug!(target: "socket.io:redis", "subscribe {sub:?}: {err}");
                        break;
                    }
                }
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(RESPONSE_TIMEOUT, sink.ping::<Value>()).await;
                    if !matches!(pong, Ok(Ok(_))) {
                        debug!(target: "socket.io:redis", "redis subscriber: no answer to PING");
                        break;
                    }
                }
            }
        }
        warn!(target: "socket.io:redis", "redis subscriber: connection lost");
    }
}

/// Keeps the member's server counts (`PUBSUB NUMSUB`) fresh.
async fn count_servers(member: Weak<dyn Member>) {
    loop {
        {
            let Some(m) = member.upgrade() else { return };
            let channels = m.counted_channels();
            if !channels.is_empty() {
                match m.link().numsub(&channels).await {
                    Ok(counts) => m.set_counts(&counts),
                    Err(err) => debug!(target: "socket.io:redis", "server count: {err}"),
                }
            }
        }
        tokio::time::sleep(COUNT_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_needs_nodes_and_valid_urls() {
        assert!(matches!(
            Link::cluster(&[]),
            Err(RedisAdapterError::NoNodes)
        ));
        assert!(Link::cluster(&["not a url"]).is_err());
        let link = Link::cluster(&["redis://127.0.0.1:1", "redis://127.0.0.1:2"]).unwrap();
        assert!(link.client().is_none());
        assert!(Link::single("redis://127.0.0.1:1")
            .unwrap()
            .client()
            .is_some());
    }

    #[test]
    fn subscriptions_are_kept_once() {
        let link = Link::single("redis://127.0.0.1:1").unwrap();
        link.subscribe(Sub::Channel("a".into()));
        link.subscribe(Sub::Pattern("b*".into()));
        link.subscribe(Sub::Channel("a".into()));
        assert_eq!(
            *lock(&link.subscriptions),
            vec![Sub::Channel("a".into()), Sub::Pattern("b*".into())]
        );
    }
}
