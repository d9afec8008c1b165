//! The chat of the Socket.IO tutorial (its end state: messages in SQLite,
//! connection state recovery, one worker per core), plus nicknames, "typing…",
//! an online list, join/leave notices and private messages, on an rsio cluster.
//!
//! ```text
//! cargo run --release --example chat                        # one worker per core, ports 3000, 3001, …
//! cargo run --release --example chat -- --workers 2 --port 4000 --db /tmp/chat.db
//! # two "hosts" as one chat: the same Redis and the same SQLite file
//! cargo run --release --example chat -- --port 4000 --db /tmp/chat.db --redis redis://127.0.0.1:6379
//! cargo run --release --example chat -- --port 5000 --db /tmp/chat.db --redis redis://127.0.0.1:6379
//! ```
//!
//! Every worker serves the page at `/`, the Socket.IO endpoint at `/socket.io/`
//! and the browser client at `/socket.io/socket.io.js`. The client bundle is
//! read from `--client-dist DIR` (`CHAT_CLIENT_DIST`); by default from
//! `tests/js/node_modules/socket.io-client/dist` (installed by `scripts/setup`)
//! in the first folder above the binary, then above the working directory, that
//! has it. All workers share the SQLite file `--db` (`CHAT_DB`, default `./chat.db`).

mod app;
mod db;

use std::{path::PathBuf, process::ExitCode};

use axum::{
    http::header,
    response::{Html, IntoResponse},
    routing::get,
    Router,
};
use clap::Parser;
use rsio::{
    adapter::RecoveryConfig,
    cluster::{ClusterArgs, WorkerContext},
    engine::DeflateConfig,
    http::client_bundle::ClientBundle,
    server::Server,
};

const INDEX_HTML: &str = include_str!("static/index.html");
const CHAT_JS: &str = include_str!("static/chat.js");
/// Where `scripts/setup` installs the pinned client, relative to the repository root.
const CLIENT_DIST: &str = "tests/js/node_modules/socket.io-client/dist";

#[derive(Parser, Debug)]
#[command(about = "The Socket.IO tutorial's chat, on an rsio cluster")]
struct Cli {
    #[command(flatten)]
    cluster: ClusterArgs,
    /// SQLite database shared by every worker.
    #[arg(long, env = "CHAT_DB", default_value = "chat.db")]
    db: PathBuf,
    /// The `dist/` folder of the npm package socket.io-client [default: <repo>/tests/js/node_modules/socket.io-client/dist].
    #[arg(long, env = "CHAT_CLIENT_DIST")]
    client_dist: Option<PathBuf>,
    /// permessage-deflate for WebSocket clients that offer it (browsers do),
    /// compressing messages of at least this many bytes (1024 when given
    /// without a value) [default: off, as in Node].
    #[arg(long, num_args = 0..=1, default_missing_value = "1024")]
    per_message_deflate: Option<usize>,
}

/// The first `<ancestor>/tests/js/node_modules/socket.io-client/dist` that has
/// `socket.io.js`, looking above the binary (`target/<profile>/examples/chat`),
/// then above the working directory; else the one under the working directory.
fn default_client_dist() -> PathBuf {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .ok()
        .and_then(|p| p.parent().map(PathBuf::from));
    let starts = exe.into_iter().chain(std::iter::once(cwd.clone()));
    for start in starts {
        for dir in start.ancestors() {
            let candidate = dir.join(CLIENT_DIST);
            if candidate.join("socket.io.js").is_file() {
                return candidate;
            }
        }
    }
    cwd.join(CLIENT_DIST)
}

fn absolute(path: PathBuf) -> PathBuf {
    std::path::absolute(&path).unwrap_or(path)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Workers inherit the working directory, but absolute paths read better in logs.
    let db_path = absolute(cli.db.clone());
    let dist = absolute(cli.client_dist.clone().unwrap_or_else(default_client_dist));
    let deflate = cli.per_message_deflate;
    rsio::cluster::run(&cli.cluster, move |worker: WorkerContext| async move {
        let path = db_path.clone();
        let db = tokio::task::spawn_blocking(move || db::Db::open(&path))
            .await?
            .map_err(|e| format!("cannot open the database {}: {e}", db_path.display()))?;
        let bundle = ClientBundle::from_dir_with_hint(
            &dist,
            "run `scripts/setup` (it installs the pinned socket.io-client in tests/js), \
             or start the chat with --client-dist <socket.io-client/dist>",
        )?;
        let mut builder = Server::builder().connection_state_recovery(RecoveryConfig::default());
        if let Some(threshold) = deflate {
            let mut deflate = DeflateConfig::default();
            deflate.threshold = threshold;
            builder = builder.per_message_deflate(deflate);
        }
        let io = worker.server(builder.config())?;
        app::install(&io, db, worker.index);
        if worker.index == 0 {
            let host = match worker.config.host {
                h if h.is_unspecified() => "127.0.0.1".to_string(),
                std::net::IpAddr::V6(h) => format!("[{h}]"),
                h => h.to_string(),
            };
            println!("chat: open http://{host}:{}", worker.port());
        }
        let app = Router::new()
            .route("/", get(|| async { Html(INDEX_HTML) }))
            .route(
                "/chat.js",
                get(|| async {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "application/javascript; charset=utf-8",
                        )],
                        CHAT_JS,
                    )
                        .into_response()
                }),
            )
            .merge(bundle.router("/socket.io/"))
            .merge(io.router());
        Ok(app)
    })
}
