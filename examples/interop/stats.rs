//! `GET /stats` of the interop server.

use rsio::server::Server;
use serde_json::json;

/// `GET /stats`: this process's counts, as JSON, for the chaos test and
/// `scripts/soak` (leak checks):
///
/// ```text
/// {"worker": 0, "pid": 1234, "engineClients": 3, "sockets": 3, "rooms": 4, "rssKiB": 9876, "relayed": 12, "keptLocal": 5, "directIn": 10, "directOut": 7, "directAnswers": 4, "redisReceived": 40}
/// ```
///
/// `worker`: the cluster index (0 in one process); `engineClients`: open
/// Engine.IO sessions; `sockets`: sockets of namespace `/`; `rooms`: rooms of
/// `/` in this worker's adapter (each socket's own room included); `rssKiB`:
/// `VmRSS` from `/proc/self/status` (0 where there is none); `relayed`: operations
/// of other workers relayed to this one; `keptLocal`: room broadcasts of this
/// worker that never left it, no other worker having members (cluster only, else 0);
/// `directIn`: broadcasts of other workers received straight from them, not
/// through the primary (counted in `relayed` too); `directOut`: frames this
/// worker sent straight to other workers, one per receiving process;
/// `directAnswers`: answers to this worker's acked broadcasts (client counts
/// and client acks) that came straight back over the links;
/// `redisReceived`: with `--redis`, the entries or messages read on Redis that
/// the primary forwarded to this worker (a room broadcast only to the workers
/// with members of its rooms);
/// `deflateCompressions`: messages permessage-deflate compressed in this process.
pub fn stats_router(
    io: &Server,
    worker: usize,
    counts: Option<Box<dyn Fn() -> ClusterCounts + Send + Sync>>,
) -> axum::Router {
    let io = io.clone();
    let counts: std::sync::Arc<dyn Fn() -> ClusterCounts + Send + Sync> = match counts {
        Some(f) => std::sync::Arc::from(f),
        None => std::sync::Arc::new(ClusterCounts::default),
    };
    axum::Router::new().route(
        "/stats",
        axum::routing::get(move || {
            let io = io.clone();
            let ClusterCounts {
                relayed,
                kept_local,
                direct: (direct_in, direct_out),
                direct_answers,
                redis_received,
            } = counts();
            async move {
                let root = io.of("/");
                let body = json!({
                    "worker": worker,
                    "pid": std::process::id(),
                    "engineClients": io.client_count(),
                    "sockets": root.sockets().len(),
                    "rooms": root.adapter().rooms().len(),
                    "rssKiB": rss_kib(),
                    "relayed": relayed,
                    "deflateCompressions": rsio::engine::deflate::compressions(),
                    "keptLocal": kept_local,
                    "directIn": direct_in,
                    "directOut": direct_out,
                    "directAnswers": direct_answers,
                    "redisReceived": redis_received,
                });
                (
                    [(http::header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
            }
        }),
    )
}

/// A cluster worker's counts of what other workers sent it (see [`stats_router`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct ClusterCounts {
    /// Operations of other workers that reached this one, by any path.
    pub relayed: u64,
    /// Room broadcasts that never left this worker.
    pub kept_local: u64,
    /// Broadcasts received straight from other workers, and frames sent straight to them.
    pub direct: (u64, u64),
    /// Answers to acked broadcasts that came straight back over the links.
    pub direct_answers: u64,
    /// With `--redis`: what the primary forwarded of what it read on Redis.
    pub redis_received: u64,
}

/// `VmRSS` of this process in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}
