//! The connections to Redis and their loops: the command writer (batched,
//! ordered), the subscriber, one `XREAD BLOCK` reader per stream, and the
//! server count refresh. Each reconnects with backoff.

use std::{
    sync::{atomic::Ordering, Arc, Mutex, Weak},
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use redis::{aio::MultiplexedConnection, AsyncConnectionConfig, Value};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{codec, Outgoing, RedisStreams};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Most commands the writer sends in one pipeline.
const BATCH: usize = 256;
/// How often the number of servers (`PUBSUB NUMSUB`) is refreshed.
const COUNT_EVERY: Duration = Duration::from_millis(1000);

/// The receiving ends the loops take when the member starts.
pub(super) struct Receivers {
    pub(super) out_rx: mpsc::UnboundedReceiver<Outgoing>,
    pub(super) sub_rx: mpsc::UnboundedReceiver<String>,
}

/// The command connection, made on first use and dropped when it fails.
#[derive(Default)]
pub(super) struct Shared {
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// After a failed attempt, no new one before this instant.
    retry_at: Mutex<Option<(Instant, Duration)>>,
}

/// Doubling backoff, logged once per failure streak.
struct Backoff {
    delay: Duration,
    failing: bool,
}

impl Backoff {
    fn new() -> Backoff {
        Backoff {
            delay: BACKOFF_MIN,
            failing: false,
        }
    }

    async fn failed(&mut self, what: &str, err: &redis::RedisError) {
        if self.failing {
            debug!(target: "socket.io:redis", "{what}: {err}; retrying in {:?}", self.delay);
        } else {
            warn!(target: "socket.io:redis", "{what}: {err}; retrying with backoff");
            self.failing = true;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(BACKOFF_MAX);
    }

    fn succeeded(&mut self, what: &str) {
        if self.failing {
            warn!(target: "socket.io:redis", "{what}: connected again");
        }
        *self = Backoff::new();
    }
}

fn config(response: Option<Duration>) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(response)
}

impl RedisStreams {
    /// The command connection, connecting if needed (at most once per backoff step).
    pub(super) async fn conn(&self) -> redis::RedisResult<MultiplexedConnection> {
        let mut slot = self.conn.conn.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let wait = *self.conn.retry_at.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, _)) = wait.filter(|(at, _)| Instant::now() < *at) {
            let left = at.saturating_duration_since(Instant::now());
            return Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "redis unreachable",
                format!("next attempt in {left:?}"),
            )));
        }
        match self
            .client
            .get_multiplexed_async_connection_with_config(&config(Some(RESPONSE_TIMEOUT)))
            .await
        {
            Ok(c) => {
                *self.conn.retry_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
                *slot = Some(c.clone());
                Ok(c)
            }
            Err(err) => {
                let step = wait.map_or(BACKOFF_MIN, |(_, d)| (d * 2).min(BACKOFF_MAX));
                *self.conn.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now() + step, step));
                warn!(target: "socket.io:redis", "redis command connection: {err}");
                Err(err)
            }
        }
    }

    /// Forgets a command connection that failed, so the next use reconnects.
    pub(super) async fn conn_failed(&self, err: &redis::RedisError) {
        if err.is_io_error() || err.is_connection_dropped() || err.is_timeout() {
            *self.conn.conn.lock().await = None;
        }
    }
}

/// Starts every loop of `node`.
pub(super) fn spawn_all(node: &Arc<RedisStreams>, receivers: Receivers) {
    tokio::spawn(writer(Arc::downgrade(node), receivers.out_rx));
    tokio::spawn(subscriber(Arc::downgrade(node), receivers.sub_rx));
    for stream in node.streams() {
        tokio::spawn(reader(Arc::downgrade(node), stream));
    }
    tokio::spawn(count_servers(Arc::downgrade(node)));
}

/// Sends queued commands in order, as pipelines of what is queued.
async fn writer(node: Weak<RedisStreams>, mut rx: mpsc::UnboundedReceiver<Outgoing>) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let Some(node) = node.upgrade() else { return };
        let mut pipe = redis::pipe();
        for item in &batch {
            pipe.add_command(item.cmd.clone()).ignore();
        }
        let result = match node.conn().await {
            Ok(mut c) => match pipe.query_async::<()>(&mut c).await {
                Ok(()) => Ok(()),
                Err(err) => {
                    node.conn_failed(&err).await;
                    Err(err)
                }
            },
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            debug!(target: "socket.io:redis", "{} command(s) not sent: {err}", batch.len());
            for item in batch.drain(..) {
                if let Some(f) = item.on_fail {
                    f();
                }
            }
        }
        batch.clear();
    }
}

/// The subscriber connection: public and private channels of every namespace.
async fn subscriber(node: Weak<RedisStreams>, mut sub_rx: mpsc::UnboundedReceiver<String>) {
    let mut backoff = Backoff::new();
    let mut first = true;
    loop {
        let Some(n) = node.upgrade() else { return };
        let pubsub = match n.client.get_async_pubsub().await {
            Ok(p) => p,
            Err(err) => {
                drop(n);
                backoff.failed("redis subscriber", &err).await;
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        // Every channel known so far (new ones also arrive through sub_rx).
        let mut channels = Vec::new();
        for s in n.states() {
            channels.push(s.public.clone());
            channels.push(s.private_channel(&n.config.channel_prefix, &s.uid));
        }
        if let Err(err) = sink.subscribe(&channels).await {
            drop(n);
            backoff.failed("redis subscriber", &err).await;
            continue;
        }
        backoff.succeeded("redis subscriber");
        if std::mem::take(&mut first) {
            n.ready.send_modify(|r| *r += 1);
        }
        drop(n);
        loop {
            tokio::select! {
                msg = stream.next() => {
                    let Some(msg) = msg else { break };
                    let Some(n) = node.upgrade() else { return };
                    match codec::parse_pubsub(msg.get_payload_bytes()) {
                        Ok(m) => n.on_message(m, None),
                        Err(err) => debug!(target: "socket.io:redis", channel = msg.get_channel_name(), "invalid message: {err}"),
                    }
                }
                ch = sub_rx.recv() => {
                    let Some(ch) = ch else { return };
                    if let Err(err) = sink.subscribe(&ch).await {
                        debug!(target: "socket.io:redis", "subscribe {ch}: {err}");
                        break;
                    }
                }
            }
        }
        warn!(target: "socket.io:redis", "redis subscriber: connection lost");
    }
}

/// One stream entry: its id and its field/value pairs.
pub(super) type Entry<'a> = (String, Vec<(&'a [u8], &'a [u8])>);

/// Entries of an `XRANGE` reply, or of one stream of an `XREAD` reply:
/// `[[id, [field, value, …]], …]`.
pub(super) fn entries(v: &Value) -> Vec<Entry<'_>> {
    let Value::Array(list) = v else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|e| {
            let Value::Array(pair) = e else { return None };
            let id = match pair.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let fields = match pair.get(1)? {
                Value::Array(f) => f
                    .chunks_exact(2)
                    .filter_map(|kv| match (&kv[0], &kv[1]) {
                        (Value::BulkString(k), Value::BulkString(v)) => {
                            Some((k.as_slice(), v.as_slice()))
                        }
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((id, fields))
        })
        .collect()
}

/// The last id of `stream` (`0-0` when empty): reading starts after it, so
/// nothing written before this server started is replayed.
async fn last_id(c: &mut MultiplexedConnection, stream: &str) -> redis::RedisResult<String> {
    let reply: Value = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(c)
        .await?;
    Ok(entries(&reply)
        .into_iter()
        .next()
        .map_or_else(|| "0-0".to_string(), |(id, _)| id))
}

/// Reads `stream` with `XREAD BLOCK` on its own connection, from the last id
/// seen (so a reconnect loses nothing that is still in the stream).
async fn reader(node: Weak<RedisStreams>, stream: String) {
    let mut backoff = Backoff::new();
    let mut last: Option<String> = None;
    let mut first = true;
    loop {
        let Some(n) = node.upgrade() else { return };
        let (block, count) = (n.config.block_time, n.config.read_count);
        let connected = n
            .client
            .get_multiplexed_async_connection_with_config(&config(None))
            .await;
        let mut c = match connected {
            Ok(c) => c,
            Err(err) => {
                drop(n);
                backoff.failed("redis stream reader", &err).await;
                continue;
            }
        };
        if last.is_none() {
            match last_id(&mut c, &stream).await {
                Ok(id) => last = Some(id),
                Err(err) => {
                    drop(n);
                    backoff.failed("redis stream reader", &err).await;
                    continue;
                }
            }
        }
        backoff.succeeded("redis stream reader");
        if std::mem::take(&mut first) {
            n.ready.send_modify(|r| *r += 1);
        }
        drop(n);
        loop {
            let from = last.clone().unwrap_or_else(|| "0-0".into());
            let reply: redis::RedisResult<Value> = redis::cmd("XREAD")
                .arg("BLOCK")
                .arg(block.as_millis() as u64)
                .arg("COUNT")
                .arg(count)
                .arg("STREAMS")
                .arg(&stream)
                .arg(&from)
                .query_async(&mut c)
                .await;
            let reply = match reply {
                Ok(r) => r,
                Err(err) => {
                    backoff.failed("redis stream reader", &err).await;
                    break;
                }
            };
            let Some(n) = node.upgrade() else { return };
            // [[stream, entries]] (RESP2), or nil when the block timed out.
            if let Value::Array(streams) = &reply {
                for s in streams {
                    let Value::Array(pair) = s else { continue };
                    let Some(list) = pair.get(1) else { continue };
                    for (id, fields) in entries(list) {
                        if let Err(err) = n.on_entry(&fields, &id) {
                            warn!(target: "socket.io:redis", stream, id, "invalid stream entry skipped: {err}")
                        }
                        last = Some(id);
                    }
                }
            }
        }
    }
}

/// Keeps each namespace's number of servers (`PUBSUB NUMSUB` of its public channel).
async fn count_servers(node: Weak<RedisStreams>) {
    loop {
        {
            let Some(n) = node.upgrade() else { return };
            let states = n.states();
            if let Err(err) = refresh_counts(&n, &states).await {
                debug!(target: "socket.io:redis", "server count: {err}");
            }
        }
        tokio::time::sleep(COUNT_EVERY).await;
    }
}

async fn refresh_counts(
    n: &RedisStreams,
    states: &[Arc<super::NsState>],
) -> redis::RedisResult<()> {
    if states.is_empty() {
        return Ok(());
    }
    let mut c = n.conn().await?;
    let mut cmd = redis::cmd("PUBSUB");
    cmd.arg("NUMSUB");
    for s in states {
        cmd.arg(&s.public);
    }
    let reply: Vec<(String, usize)> = match cmd.query_async(&mut c).await {
        Ok(r) => r,
        Err(err) => {
            n.conn_failed(&err).await;
            return Err(err);
        }
    };
    for (s, (_, count)) in states.iter().zip(reply) {
        s.servers.store(count.max(1), Ordering::Relaxed);
    }
    Ok(())
}

/// The number of servers subscribed to `channel`, asked now.
pub(super) async fn numsub(n: &RedisStreams, channel: &str) -> redis::RedisResult<usize> {
    let mut c = n.conn().await?;
    let reply: Vec<(String, usize)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut c)
        .await?;
    Ok(reply.first().map_or(0, |(_, n)| *n))
}
