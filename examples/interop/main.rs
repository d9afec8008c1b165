//! The server the interop tests run against. Its behaviour is specified by
//! `tests/js/reference-server.mjs`, the same server written with Node's
//! socket.io, so the tests can be checked against both.
//!
//! ```text
//! cargo run --example interop -- --port 3000                      # one process
//! cargo run --example interop -- --cluster --workers 3 --port 4000  # primary + 3 workers
//! cargo run --example interop -- --redis-streams redis://127.0.0.1:6379 --port 3000
//! cargo run --example interop -- --redis-classic redis://127.0.0.1:6379 --port 3000
//! cargo run --example interop -- --redis-classic redis://127.0.0.1:7000,redis://127.0.0.1:7001 --port 3000
//! curl http://127.0.0.1:4000/stats   # counts and RSS of one worker (see `stats::stats_router`)
//! ```

mod app;
mod cluster;
mod fake_worker;
mod stats;

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use clap::Parser;
use rsio::{
    adapter::{RedisClassic, RedisClassicConfig, RedisStreams, RedisStreamsConfig},
    cluster::{ClusterArgs, WorkerContext},
    engine::DeflateConfig,
    server::Server,
};

#[derive(Parser, Debug)]
#[command(about = "rsio interop test server")]
struct Cli {
    /// Run as a cluster (primary + workers on ports --port, --port + 1, …).
    #[arg(long)]
    cluster: bool,
    /// In a cluster, turn connection state recovery on (always on in one process).
    #[arg(long)]
    recovery: bool,
    /// Accept Socket.IO v2 clients (Engine.IO v3), as Node's `allowEIO3`.
    #[arg(long)]
    allow_eio3: bool,
    /// permessage-deflate for WebSocket clients that offer it (Node's
    /// `perMessageDeflate`), compressing messages of at least this many bytes
    /// (1024 when given without a value).
    #[arg(long, num_args = 0..=1, default_missing_value = "1024")]
    per_message_deflate: Option<usize>,
    /// Packet format: `msgpack` for clients with socket.io-msgpack-parser.
    #[arg(long, default_value = "default", value_parser = ["default", "msgpack"])]
    parser: String,
    /// One process, member of a Redis Streams cluster with Node servers
    /// (`@socket.io/redis-streams-adapter`): `redis://127.0.0.1:6379`.
    #[arg(long, value_name = "URL")]
    redis_streams: Option<String>,
    /// One process, member of a classic Redis adapter cluster with Node servers
    /// (`@socket.io/redis-adapter` 8.3): one URL for one Redis, or the
    /// comma-separated URLs of Redis Cluster nodes.
    #[arg(long, value_name = "URL[,URL...]", conflicts_with = "redis_streams")]
    redis_classic: Option<String>,
    #[command(flatten)]
    options: ClusterArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(code) = fake_worker::run_if_asked() {
        return code;
    }
    if cli.cluster {
        let recovery = cli.recovery;
        let allow_eio3 = cli.allow_eio3;
        let deflate = deflate_config(cli.per_message_deflate);
        let parser = app::parser(&cli.parser);
        return rsio::cluster::run(&cli.options, move |worker: WorkerContext| async move {
            let mut config = app::server_config();
            config.engine.allow_eio3 = allow_eio3;
            config.engine.per_message_deflate = deflate;
            config.parser = parser;
            if !recovery {
                config.connection_state_recovery = None;
            }
            let io = worker.server(config)?;
            app::install(&io, Some(worker.index));
            let index = worker.index;
            let relayed = move || stats::ClusterCounts {
                relayed: worker.relayed_operations(),
                kept_local: worker.kept_local_broadcasts(),
                direct: worker.direct_broadcasts(),
                direct_answers: worker.direct_answers(),
                redis_received: worker.redis_received(),
            };
            Ok(io
                .router()
                .merge(stats::stats_router(&io, index, Some(Box::new(relayed)))))
        });
    }
    match single(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("interop: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `--per-message-deflate [threshold]` as the engine option.
fn deflate_config(threshold: Option<usize>) -> Option<DeflateConfig> {
    threshold.map(|threshold| {
        let mut deflate = DeflateConfig::default();
        deflate.threshold = threshold;
        deflate
    })
}

fn single(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let mut config = app::server_config();
        config.engine.allow_eio3 = cli.allow_eio3;
        config.engine.per_message_deflate = deflate_config(cli.per_message_deflate);
        config.parser = app::parser(&cli.parser);
        let io = if let Some(url) = &cli.redis_streams {
            let redis = RedisStreams::new(url, RedisStreamsConfig::default())?;
            let io = Server::with_adapter(config, redis.factory());
            redis.attach(&io);
            app::install(&io, Some(0));
            // Serve anyway: the adapter keeps retrying in the background.
            if !redis.ready(Duration::from_secs(5)).await {
                tracing::warn!("redis not reachable yet at {url}; serving local clients");
            }
            io
        } else if let Some(urls) = &cli.redis_classic {
            let list: Vec<&str> = urls.split(',').map(str::trim).collect();
            let redis = if list.len() > 1 {
                RedisClassic::cluster(&list, RedisClassicConfig::default())?
            } else {
                RedisClassic::new(urls, RedisClassicConfig::default())?
            };
            let io = Server::with_adapter(config, redis.factory());
            redis.attach(&io);
            app::install(&io, Some(0));
            if !redis.ready(Duration::from_secs(5)).await {
                tracing::warn!("redis not reachable yet at {urls}; serving local clients");
            }
            io
        } else {
            let io = Server::new(config);
            app::install(&io, None);
            io
        };
        let host = cli.options.host.unwrap_or([127, 0, 0, 1].into());
        let addr = SocketAddr::new(host, cli.options.port.unwrap_or(3000));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let router = io.router().merge(stats::stats_router(&io, 0, None));
        rsio::http::serve(listener, router, Default::default(), shutdown).await?;
        Ok(())
    })
}
