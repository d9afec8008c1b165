//! The cluster runtime: a primary process and one worker per core, each worker
//! on its own port (base port + index), adapter messages relayed by the primary
//! over Unix sockets: the design of Node's `cluster` module with
//! `@socket.io/cluster-adapter`.
//!
//! ```no_run
//! use clap::Parser;
//! use rsio::cluster::{ClusterArgs, WorkerContext};
//! use rsio::server::{ServerConfig, Socket};
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     cluster: ClusterArgs,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let cli = Cli::parse();
//!     rsio::cluster::run(&cli.cluster, |worker: WorkerContext| async move {
//!         let io = worker.server(ServerConfig::default())?;
//!         io.ns("/", |socket: Socket| async move {
//!             // a broadcast reaches the clients of every worker
//!             let _ = socket.namespace().emit("joined", &(socket.id().to_string(),));
//!         });
//!         Ok(io.router())
//!     })
//! }
//! ```

#[doc(hidden)]
pub mod bench;
mod config;
mod fences;
mod inbox;
mod inherited;
mod interest;
mod lanes;
mod listen_fds;
mod metrics;
mod metrics_http;
mod notify;
mod primary;
mod redis;
mod redis_host;
mod relay;
mod reload;
mod sessions;
mod shared_port;
mod spawn;
mod supervise;
mod validate;
mod worker;

use std::{future::Future, process::ExitCode};

pub use config::{
    usable_cpus, ClusterArgs, ClusterConfig, ConfigError, PinMode, RedisAdapterKind, RedisOptions,
};
pub use redis::RedisJoinError;
pub use worker::{WorkerContext, WorkerError};

/// Errors an application's setup may return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the cluster: in the primary (the process you start) this binds the
/// ports and supervises the workers; in a worker (this same binary, re-executed
/// by the primary) it builds the application with `app` and serves it.
/// Logging is set up here, at the level the options give.
pub fn run<F, Fut>(args: &ClusterArgs, app: F) -> ExitCode
where
    F: FnOnce(WorkerContext) -> Fut,
    Fut: Future<Output = Result<axum::Router, BoxError>>,
{
    let mut config = match args.resolve() {
        Ok(c) => c,
        Err(err) => {
            eprintln!("rsio: {err}");
            // sysexits' EX_CONFIG: systemd's RestartPreventExitStatus keeps it from looping.
            return ExitCode::from(78);
        }
    };
    let worker = std::env::var(spawn::WORKER_ENV)
        .ok()
        .and_then(|i| i.parse::<usize>().ok());
    init_logging(&config.log_level, worker);
    match worker {
        Some(index) => {
            let count = std::env::var(spawn::WORKERS_ENV)
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(config.workers);
            config.shared_port = std::env::var_os(spawn::HANDOFF_ENV).is_some();
            let span = tracing::info_span!("worker", i = index);
            let _guard = span.enter();
            worker::run(index, count, config, app)
        }
        None => {
            if config.admin_ui.is_some() && std::env::var_os(crate::admin::SECRET_ENV).is_none() {
                // One secret for every worker (they inherit the environment), so that
                // an admin session token from one worker is valid on all. Set while
                // this process has one thread: the runtime starts in `primary::run`.
                let secret: [u8; 32] = rand::random();
                let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
                std::env::set_var(crate::admin::SECRET_ENV, hex);
            }
            let span = tracing::info_span!("primary");
            let _guard = span.enter();
            if let Some(options) = &config.redis {
                // Refused here, once, rather than by every worker it would start.
                if let Err(err) = redis::member(options) {
                    eprintln!("rsio: {err}");
                    return ExitCode::from(78);
                }
                tracing::info!(
                    target: "cluster",
                    "joining the hosts on {} ({:?} adapter): every worker is a member, \
                     the primary reads the broadcasts for them",
                    options.redacted_url(),
                    options.adapter
                );
            }
            primary::run(config)
        }
    }
}

fn init_logging(level: &str, worker: Option<usize>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Under journald, timestamps are the journal's.
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(
            !journald && worker.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        );
    let _ = if journald {
        builder.without_time().try_init()
    } else {
        builder.try_init()
    };
}
