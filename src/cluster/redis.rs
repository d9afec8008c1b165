//! A host past one box: with `--redis`, every worker is a member of the Redis
//! cluster, as each Node server is. Its adapter is the Redis adapter, so Node
//! servers count each worker as one server and get one answer per worker to
//! `serverSideEmit`; recovery offsets are the stream ids, one sequence across
//! hosts. The relay over the primary keeps the control messages (heartbeats,
//! drain, stats, metrics).

use std::{sync::Arc, time::Duration};

use tracing::{error, info};

use super::config::{RedisAdapterKind, RedisOptions};
use crate::{
    adapter::{RedisAdapterError, RedisStreams, RedisStreamsConfig},
    server::{AdapterFactory, Server},
};

/// How long a worker waits for Redis before saying, once, that it serves alone.
const FIRST_CONNECT: Duration = Duration::from_secs(5);

/// Why a host cannot join the Redis cluster.
#[derive(Debug, thiserror::Error)]
pub enum RedisJoinError {
    /// `--redis` is not a Redis URL.
    #[error("--redis: {0}")]
    Url(#[from] RedisAdapterError),
    /// `--redis-adapter classic` asked for an adapter this build lacks.
    #[error(
        "--redis-adapter classic is not built yet: use --redis-adapter streams \
         (@socket.io/redis-streams-adapter)"
    )]
    ClassicNotBuilt,
}

/// One worker's membership of the Redis cluster.
pub(crate) enum Member {
    Streams(Arc<RedisStreams>),
}

/// The member for `options`: the one place that maps `--redis-adapter` to an
/// adapter. Nothing connects until [`Member::attach`], so the primary calls it
/// too, to refuse bad options before it starts any worker.
pub(crate) fn member(options: &RedisOptions) -> Result<Member, RedisJoinError> {
    match options.adapter {
        RedisAdapterKind::Streams => Ok(Member::Streams(RedisStreams::new(
            &options.url,
            RedisStreamsConfig::default(),
        )?)),
        RedisAdapterKind::Classic => Err(RedisJoinError::ClassicNotBuilt),
    }
}

impl Member {
    /// The adapter factory of the worker's server.
    pub(crate) fn factory(&self) -> AdapterFactory {
        match self {
            Member::Streams(node) => node.factory(),
        }
    }

    /// Connects (retrying with backoff, in the background) and delivers what
    /// other members send to `server`. Until Redis answers, the worker serves
    /// its own clients; the first time it has waited [`FIRST_CONNECT`] for it,
    /// it says so. Call it on the worker's runtime.
    pub(crate) fn attach(&self, server: &Server, options: &RedisOptions) {
        let url = options.redacted_url();
        match self {
            Member::Streams(node) => {
                node.attach(server);
                let node = node.clone();
                tokio::spawn(async move {
                    if node.ready(FIRST_CONNECT).await {
                        info!(target: "cluster", "member of the Redis cluster at {url} (streams)");
                        return;
                    }
                    error!(
                        target: "cluster",
                        "redis at {url} is unreachable: this worker serves its own clients only \
                         (their broadcasts reach no other worker or host) and keeps retrying \
                         with backoff"
                    );
                    while !node.ready(Duration::from_secs(60)).await {}
                    info!(target: "cluster", "member of the Redis cluster at {url} (streams), after a wait");
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_is_built_and_classic_says_it_is_not() {
        let streams = RedisOptions {
            url: "redis://127.0.0.1:1".into(),
            adapter: RedisAdapterKind::Streams,
        };
        assert!(matches!(member(&streams), Ok(Member::Streams(_))));
        let classic = RedisOptions {
            adapter: RedisAdapterKind::Classic,
            ..streams.clone()
        };
        let err = member(&classic).err().expect("classic is refused");
        assert!(err.to_string().contains("not built yet"), "{err}");
        let bad = RedisOptions {
            url: "http://127.0.0.1:1".into(),
            ..streams
        };
        assert!(matches!(member(&bad), Err(RedisJoinError::Url(_))));
    }
}
