//! A host past one box: with `--redis`, every worker is a member of the Redis
//! cluster, as each Node server is. Its adapter is the Redis adapter, so Node
//! servers count each worker as one server and get one answer per worker to
//! `serverSideEmit`; recovery offsets are the stream ids, one sequence across
//! hosts (with the streams adapter; the classic one, like Node's, has no
//! recovery). The relay over the primary keeps the control messages
//! (heartbeats, drain, stats, metrics).
//!
//! A member for everything but reading the broadcasts: the primary is the
//! host's one reader of them ([`host_reader`]: the stream, or the broadcast
//! and request channels of the classic adapter, in their publishing order),
//! and forwards each entry or message, as Redis sent it, to its workers
//! ([`Member::feed`]): a room broadcast only to those with members of its
//! rooms, which the workers count in the interest hints as in a cluster
//! without Redis ([`Member::count_rooms_in`], see [`super::redis_host`]). A
//! broadcast so crosses Redis once per host, not once per worker; the
//! workers still publish their own, answer requests and are counted as
//! servers (`PUBSUB NUMSUB` of channels they subscribe).
//!
//! While a worker cannot write to Redis, a broadcast whose write was never
//! sent goes to the host's other workers through the primary's relay instead
//! ([`Member::relay_for_host`]), so that one host stays one chat; nothing
//! crosses the relay while Redis takes the writes.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use rsio_ipc::Message;
use tracing::{error, info};

use super::config::{RedisAdapterKind, RedisOptions};
use crate::{
    adapter::{
        ClusterLink, Fed, HostReader, HostRelay, InterestFactory, RedisAdapterError, RedisClassic,
        RedisClassicConfig, RedisStreams, RedisStreamsConfig, Route,
    },
    server::{AdapterFactory, Server},
};

/// How long a worker waits for Redis before saying, once, that it serves alone.
const FIRST_CONNECT: Duration = Duration::from_secs(5);

/// Why a host cannot join the Redis cluster.
#[derive(Debug, thiserror::Error)]
pub enum RedisJoinError {
    /// `--redis` is not a Redis URL (or, for the classic adapter, a
    /// comma-separated list of a Redis Cluster's node URLs).
    #[error("--redis: {0}")]
    Url(#[from] RedisAdapterError),
}

/// One worker's membership of the Redis cluster.
pub(crate) enum Member {
    Streams(Arc<RedisStreams>),
    Classic(Arc<RedisClassic>),
}

/// The member for `options`: the one place that maps `--redis-adapter` to an
/// adapter. Nothing connects until [`Member::attach`], so the primary calls it
/// too, to refuse bad options before it starts any worker.
pub(crate) fn member(options: &RedisOptions) -> Result<Member, RedisJoinError> {
    let member = match options.adapter {
        RedisAdapterKind::Streams => Member::Streams(RedisStreams::new(
            &options.url,
            RedisStreamsConfig::default(),
        )?),
        RedisAdapterKind::Classic => {
            let urls = urls(options);
            let config = RedisClassicConfig::default();
            Member::Classic(if urls.len() > 1 {
                RedisClassic::cluster(&urls, config)?
            } else {
                RedisClassic::new(&options.url, config)?
            })
        }
    };
    Ok(member)
}

/// Several URLs: the nodes of a Redis Cluster (as an ioredis `Cluster`).
fn urls(options: &RedisOptions) -> Vec<&str> {
    options.url.split(',').map(str::trim).collect()
}

/// The host's one reader of the broadcasts (the streams, or the broadcast
/// channels), with the options its workers' members have; `forward` gets each
/// entry or message as the ipc message to send to the workers, with the uid
/// that published it when it has one, and which workers it is for. Start it with [`HostReader::start`] on
/// the primary's runtime.
pub(crate) fn host_reader(
    options: &RedisOptions,
    forward: impl Fn(Message, Option<Bytes>, Route) + Send + Sync + 'static,
) -> Result<Arc<HostReader>, RedisJoinError> {
    let sink = move |fed: Fed| match (fed.route(), fed) {
        (route, Fed::Entry { id, fields }) => {
            let uid = fields
                .chunks_exact(2)
                .find(|kv| kv[0] == "uid")
                .map(|kv| kv[1].clone());
            forward(Message::RedisEntry { id, fields }, uid, route)
        }
        (route, Fed::Message { channel, payload }) => {
            let uid = broadcast_uid(&payload);
            forward(Message::RedisMessage { channel, payload }, uid, route)
        }
    };
    Ok(match options.adapter {
        RedisAdapterKind::Streams => {
            HostReader::streams(&options.url, RedisStreamsConfig::default(), sink)?
        }
        RedisAdapterKind::Classic => {
            HostReader::classic(&urls(options), &RedisClassicConfig::default(), sink)?
        }
    })
}

/// The uid of a classic broadcast, msgpack `[uid, packet, opts]`: the first
/// element, when it is a string (a slice of `payload`, not a copy).
fn broadcast_uid(payload: &Bytes) -> Option<Bytes> {
    let (&array, rest) = payload.split_first()?;
    if array != 0x93 {
        return None;
    }
    let (start, len) = match *rest.first()? {
        b @ 0xa0..=0xbf => (2, usize::from(b & 0x1f)),
        0xd9 => (3, usize::from(*rest.get(1)?)),
        _ => return None,
    };
    (payload.len() >= start + len).then(|| payload.slice(start..start + len))
}

impl Member {
    /// The adapter factory of the worker's server.
    pub(crate) fn factory(&self) -> AdapterFactory {
        match self {
            Member::Streams(node) => node.factory(),
            Member::Classic(node) => node.factory(),
        }
    }

    /// Reads no broadcast itself: the primary reads them for the whole host and
    /// forwards them ([`Member::feed`]). `announce` is told the name and uid
    /// of each of its namespaces, for the primary. Call it before
    /// [`Member::factory`].
    pub(crate) fn fed_by_primary(&self, announce: impl Fn(&str, &str) + Send + Sync + 'static) {
        match self {
            Member::Streams(node) => node.set_fed(Box::new(announce)),
            Member::Classic(node) => node.set_fed(Box::new(announce)),
        }
    }

    /// Counts the rooms of its namespaces in this worker's interest hints (see
    /// [`ClusterLink::redis_interest`]): the primary then forwards a room
    /// broadcast only to the workers with members of its rooms. Call it
    /// before [`Member::factory`].
    pub(crate) fn count_rooms_in(&self, link: &Arc<ClusterLink>) {
        let link = Arc::downgrade(link);
        let interest: InterestFactory =
            Box::new(move |nsp: &str| link.upgrade()?.redis_interest(nsp));
        match self {
            Member::Streams(node) => node.set_room_interest(interest),
            Member::Classic(node) => node.set_room_interest(interest),
        }
    }

    /// While Redis cannot be written, this member's broadcasts still reach the
    /// other workers of its host: one whose write was never sent is handed to
    /// `relay` (the primary's relay), not one whose outcome is unknown (the
    /// host's reader forwards it if Redis took it). Call it before
    /// [`Member::factory`]'s adapters broadcast.
    pub(crate) fn relay_for_host(&self, relay: HostRelay) {
        match self {
            Member::Streams(node) => node.set_host_relay(relay),
            Member::Classic(node) => node.set_host_relay(relay),
        }
    }

    /// Handles what the host's reader forwarded ([`Message::RedisEntry`],
    /// [`Message::RedisMessage`]) as if this member had read it; other
    /// messages are not its.
    pub(crate) fn feed(&self, message: &Message) {
        match (self, message) {
            (Member::Streams(node), Message::RedisEntry { id, fields }) => {
                node.on_fed_entry(id, fields)
            }
            (Member::Classic(node), Message::RedisMessage { channel, payload }) => {
                node.on_fed_message(channel, payload)
            }
            _ => {}
        }
    }

    /// The adapter's name in logs.
    fn kind(&self) -> &'static str {
        match self {
            Member::Streams(_) => "streams",
            Member::Classic(_) => "classic",
        }
    }

    /// Whether the member is connected, waiting at most `timeout`.
    async fn ready(&self, timeout: Duration) -> bool {
        match self {
            Member::Streams(node) => node.ready(timeout).await,
            Member::Classic(node) => node.ready(timeout).await,
        }
    }

    /// Connects (retrying with backoff, in the background) and delivers what
    /// other members send to `server`. Until Redis answers, the worker serves
    /// its own clients; the first time it has waited [`FIRST_CONNECT`] for it,
    /// it says so. Call it on the worker's runtime.
    pub(crate) fn attach(self: Arc<Self>, server: &Server, options: &RedisOptions) {
        let url = options.redacted_url();
        match &*self {
            Member::Streams(node) => node.attach(server),
            Member::Classic(node) => node.attach(server),
        }
        tokio::spawn(async move {
            let kind = self.kind();
            if self.ready(FIRST_CONNECT).await {
                info!(target: "cluster", "member of the Redis cluster at {url} ({kind})");
                return;
            }
            error!(
                target: "cluster",
                "redis at {url} is unreachable: this worker serves its own clients, its \
                 broadcasts reach the other workers of this host (not other hosts), and it \
                 keeps retrying with backoff"
            );
            while !self.ready(Duration::from_secs(60)).await {}
            info!(target: "cluster", "member of the Redis cluster at {url} ({kind}), after a wait");
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_adapter_kind_is_built_and_a_bad_url_refused() {
        let streams = RedisOptions {
            url: "redis://127.0.0.1:1".into(),
            adapter: RedisAdapterKind::Streams,
        };
        assert!(matches!(member(&streams), Ok(Member::Streams(_))));
        let classic = RedisOptions {
            adapter: RedisAdapterKind::Classic,
            ..streams.clone()
        };
        assert!(matches!(member(&classic), Ok(Member::Classic(_))));
        let cluster = RedisOptions {
            url: "redis://127.0.0.1:1,redis://127.0.0.1:2".into(),
            ..classic.clone()
        };
        assert!(matches!(member(&cluster), Ok(Member::Classic(_))));
        let bad = RedisOptions {
            url: "http://127.0.0.1:1".into(),
            ..streams
        };
        assert!(matches!(member(&bad), Err(RedisJoinError::Url(_))));
    }

    #[test]
    fn the_uid_of_a_classic_broadcast_is_read_without_decoding_it() {
        let mut payload = vec![0x93, 0xa3, b'a', b'b', b'c', 0x80, 0x80];
        assert_eq!(
            broadcast_uid(&Bytes::from(payload.clone())).as_deref(),
            Some(&b"abc"[..])
        );
        let long = "e".repeat(40);
        let mut str8 = vec![0x93, 0xd9, 40];
        str8.extend_from_slice(long.as_bytes());
        assert_eq!(
            broadcast_uid(&Bytes::from(str8)).as_deref(),
            Some(long.as_bytes())
        );
        payload[0] = 0x92;
        assert_eq!(broadcast_uid(&Bytes::from(payload)), None);
        assert_eq!(
            broadcast_uid(&Bytes::from_static(&[0x93, 0xa5, b'x'])),
            None
        );
        assert_eq!(broadcast_uid(&Bytes::new()), None);
    }
}
