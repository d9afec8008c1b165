//! The benchmark server: rsio running the bench contract
//! (`shared/bench-contract.md`, see `scripts/bench`).
//!
//! ```text
//! cargo run --release --example bench -- --single --port 3000      # one process, one thread
//! cargo run --release --example bench -- --workers 2 --port 4000   # primary + 2 workers
//! cargo run --release --example bench -- --single --per-message-deflate   # deflate on (threshold 1024)
//! ```
//!
//! Path `/socket.io/`, namespace `/`, connection state recovery off. Events:
//! `echo` (ack with the same arguments when an ack id is given, else emit
//! `echo` back), `join` (room; ack), `broadcast` (room, payload: `bcast`
//! with the payload to the room on every worker, sender included; ack `"ok"`
//! if asked), `broadcast_all` (payload: `bcast` to every socket).

use std::{net::SocketAddr, process::ExitCode};

use clap::Parser;
use rsio::{
    cluster::{ClusterArgs, WorkerContext},
    engine::DeflateConfig,
    parser::Args,
    server::{AckSender, Server, ServerConfig, Socket},
};

#[derive(Parser, Debug)]
#[command(about = "rsio benchmark server (the bench contract)")]
struct Cli {
    /// One process on one current-thread runtime on --port (default 3000),
    /// instead of a cluster of --workers on --port, --port + 1, …
    #[arg(long)]
    single: bool,
    /// Packet format: `msgpack` for clients with socket.io-msgpack-parser.
    #[arg(long, default_value = "default", value_parser = ["default", "msgpack"])]
    parser: String,
    /// permessage-deflate for clients that offer it, compressing messages of
    /// at least this many bytes (1024 when given without a value), as Node's
    /// `perMessageDeflate: {threshold: 1024}` [default: off].
    #[arg(long, num_args = 0..=1, default_missing_value = "1024")]
    per_message_deflate: Option<usize>,
    #[command(flatten)]
    options: ClusterArgs,
}

fn config(parser: &str, deflate: Option<usize>) -> ServerConfig {
    let mut builder = Server::builder().parser(match parser {
        "msgpack" => rsio::parser::Parser::Msgpack,
        _ => rsio::parser::Parser::Default,
    });
    if let Some(threshold) = deflate {
        let mut deflate = DeflateConfig::default();
        deflate.threshold = threshold;
        builder = builder.per_message_deflate(deflate);
    }
    builder.config()
}

fn install(io: &Server) {
    let io2 = io.clone();
    io.ns("/", move |socket: Socket| {
        let io = io2.clone();
        async move {
            socket.on("echo", |s: Socket, args: Args, ack: AckSender| async move {
                if ack.is_requested() {
                    let _ = ack.send(args);
                } else {
                    let _ = s.emit("echo", args);
                }
            });
            socket.on("join", |s: Socket, args: Args, ack: AckSender| async move {
                if let Ok(room) = args.get::<String>(0) {
                    s.join(room);
                }
                if ack.is_requested() {
                    let _ = ack.send(&("ok",));
                }
            });
            socket.on(
                "broadcast",
                |s: Socket, args: Args, ack: AckSender| async move {
                    // The payload as it came, bytes and attachments untouched.
                    let payload = args.nth(1);
                    if let (Ok(room), false) = (args.get::<String>(0), payload.json().is_empty()) {
                        let _ = s.namespace().to(room).emit("bcast", payload);
                    }
                    if ack.is_requested() {
                        let _ = ack.send(&("ok",));
                    }
                },
            );
            let io_all = io.clone();
            socket.on("broadcast_all", move |_s: Socket, args: Args| {
                let io = io_all.clone();
                async move {
                    let payload = args.nth(0);
                    if !payload.json().is_empty() {
                        let _ = io.emit("bcast", payload);
                    }
                }
            });
        }
    });
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !cli.single {
        let parser = cli.parser.clone();
        let deflate = cli.per_message_deflate;
        return rsio::cluster::run(&cli.options, move |worker: WorkerContext| {
            let parser = parser.clone();
            async move {
                let io = worker.server(config(&parser, deflate))?;
                install(&io);
                Ok(io.router())
            }
        });
    }
    match single(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bench: {err}");
            ExitCode::FAILURE
        }
    }
}

fn single(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| cli.options.log_level.as_deref().unwrap_or("warn").into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let io = Server::new(config(&cli.parser, cli.per_message_deflate));
        install(&io);
        let host = cli.options.host.unwrap_or([127, 0, 0, 1].into());
        let addr = SocketAddr::new(host, cli.options.port.unwrap_or(3000));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        rsio::http::serve(listener, io.router(), Default::default(), shutdown).await?;
        Ok(())
    })
}
