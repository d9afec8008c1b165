//! The stream readers of the Redis Streams adapter: one `XREAD BLOCK` loop per
//! stream, on its own connection, reconnecting with backoff (the command,
//! subscriber and count loops are the shared [`super::link`]'s). A server that
//! reads for itself runs them, and so does a host's primary reading for its
//! workers ([`super::host`]).

use std::{
    sync::{Arc, Weak},
    time::Duration,
};

use redis::{aio::ConnectionLike, Value};
use tracing::warn;

use super::{
    link::{connection_config, Backoff, Link},
    RedisStreamsConfig,
};

/// How long past `BLOCK` a reader waits for Redis' answer before it takes
/// the connection for dead (Redis gone without closing it: its host rebooted,
/// the network cut) and reconnects.
const READ_MARGIN: Duration = Duration::from_secs(3);

/// What a stream reader reads for.
pub(crate) trait StreamReader: Send + Sync + 'static {
    /// The link whose client it connects with (and whose `ready` it counts in).
    fn link(&self) -> &Link;
    /// `blockTimeInMs`, `readCount` and the stream names.
    fn config(&self) -> &RedisStreamsConfig;
    /// One entry read from `stream`; an error is logged and the entry skipped.
    fn on_entry(
        &self,
        stream: &str,
        fields: &[(&[u8], &[u8])],
        id: &str,
    ) -> Result<(), super::CodecError>;

    /// The entries of `stream` in one `XREAD` reply (`[[id, [field, value,
    /// …]], …]`), in order; returns the id of the last one.
    fn on_entries(&self, stream: &str, list: Value) -> Option<String> {
        let mut last = None;
        for (id, fields) in entries(&list) {
            if let Err(err) = self.on_entry(stream, &fields, &id) {
                warn!(target: "socket.io:redis", stream, id, "invalid stream entry skipped: {err}")
            }
            last = Some(id);
        }
        last
    }
}

/// Starts one reader per stream of `node`'s configuration.
pub(crate) fn spawn_readers<R: StreamReader>(node: &Arc<R>) {
    for stream in super::streams_of(node.config()) {
        let weak: Weak<R> = Arc::downgrade(node);
        tokio::spawn(reader(weak, stream));
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
pub(super) async fn last_id(
    c: &mut impl ConnectionLike,
    stream: &[u8],
) -> redis::RedisResult<String> {
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
async fn reader<R: StreamReader>(node: Weak<R>, stream: String) {
    let mut backoff = Backoff::new();
    let mut last: Option<String> = None;
    let mut first = true;
    loop {
        let Some(n) = node.upgrade() else { return };
        let (block, count) = (n.config().block_time, n.config().read_count);
        let Some(client) = n.link().client() else {
            warn!(target: "socket.io:redis", "redis streams need one Redis, not a cluster");
            return;
        };
        let connected = client
            .get_multiplexed_async_connection_with_config(&connection_config(block + READ_MARGIN))
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
            match last_id(&mut c, stream.as_bytes()).await {
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
            n.link().ready.send_modify(|r| *r += 1);
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
            if let Value::Array(streams) = reply {
                for s in streams {
                    let Value::Array(pair) = s else { continue };
                    let Some(list) = pair.into_iter().nth(1) else {
                        continue;
                    };
                    if let Some(id) = n.on_entries(&stream, list) {
                        last = Some(id);
                    }
                }
            }
        }
    }
}
