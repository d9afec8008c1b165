//! The server the protocol conformance suites run against: a raw Engine.IO echo
//! at `/engine.io/` (every engine option settable from the command line) and the
//! Socket.IO server of the v5 suite at `/socket.io/`. `--allow-eio3` for the v3 suite.
//!
//! ```text
//! cargo run --example conformance -- --port 3000
//! ```

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{routing::get, Router};
use clap::Parser;
use rsio::engine::{
    AllowedOrigins, CloseReason, CookieOptions, CorsOptions, CorsOrigin, DeflateConfig, Engine,
    EngineConfig, EngineHandler, Frame, Message, Session, Transports,
};
use rsio::{
    parser::Args as SioArgs,
    server::{AckSender, Server, ServerBuilder, ServerConfig, Socket},
};

#[derive(Parser, Debug)]
#[command(about = "rsio conformance server: Engine.IO echo at /engine.io/")]
struct Args {
    #[arg(long, default_value_t = 3000, env = "PORT")]
    port: u16,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    #[arg(long, default_value_t = 300)]
    ping_interval: u64,
    #[arg(long, default_value_t = 200)]
    ping_timeout: u64,
    #[arg(long, default_value_t = 10_000)]
    upgrade_timeout: u64,
    #[arg(long, default_value_t = 1_000_000)]
    max_http_buffer_size: usize,
    /// Comma-separated list of `polling`, `websocket`.
    #[arg(long, default_value = "polling,websocket")]
    transports: String,
    /// Packet format: `msgpack` for clients with socket.io-msgpack-parser.
    #[arg(long, default_value = "default", value_parser = ["default", "msgpack"])]
    parser: String,
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    allow_upgrades: bool,
    /// Set the `io` cookie on handshakes.
    #[arg(long)]
    cookie: bool,
    /// Allowed CORS origin (repeatable); `*` allows any, `true` reflects the
    /// request's origin (Node's `origin: true`).
    #[arg(long = "cors-origin")]
    cors_origins: Vec<String>,
    #[arg(long)]
    cors_credentials: bool,
    /// Refuse handshakes that lack this request header (allowRequest).
    #[arg(long)]
    allow_request_header: Option<String>,
    #[arg(long, default_value_t = 1024)]
    http_compression_threshold: usize,
    #[arg(long)]
    no_http_compression: bool,
    /// An extra message sent right after `open`.
    #[arg(long)]
    initial_packet: Option<String>,
    /// Refuse foreign browser origins: same-origin requests and these (comma
    /// separated) pass. Absent: any origin, as Node.
    #[arg(long, value_delimiter = ',')]
    allowed_origins: Option<Vec<String>>,
    /// Bytes queued for one client before it is disconnected.
    #[arg(long)]
    max_send_queue_bytes: Option<usize>,
    /// The peer is a reverse proxy: believe its `X-Forwarded-*` headers.
    #[arg(long)]
    trust_proxy: bool,
    /// Accept Engine.IO v3 clients (Node's `allowEIO3`), for the eio3 suite;
    /// the eio4 suite's invalid-`EIO` test then fails, as with Node.
    #[arg(long)]
    allow_eio3: bool,
    /// permessage-deflate for WebSocket clients that offer it (Node's
    /// `perMessageDeflate`), compressing messages of at least this many bytes
    /// (1024 when given without a value).
    #[arg(long, num_args = 0..=1, default_missing_value = "1024")]
    per_message_deflate: Option<usize>,
}

/// Sends every message back unchanged.
struct Echo;

impl EngineHandler for Echo {
    type Data = ();

    fn on_open(&self, _session: &Arc<Session<()>>) {}

    fn on_message(&self, session: &Arc<Session<()>>, message: Message) {
        let frame = match message {
            Message::Text(text) => {
                // Engine text messages are UTF-8 by construction.
                Frame::message(std::str::from_utf8(&text).unwrap_or_default())
            }
            Message::Binary(data) => Frame::Binary(data),
        };
        session.send(frame);
    }

    fn on_close(&self, _session: &Arc<Session<()>>, _reason: CloseReason) {}
}

fn engine_config(args: &Args) -> EngineConfig {
    let transports = match (
        args.transports.split(',').any(|t| t.trim() == "polling"),
        args.transports.split(',').any(|t| t.trim() == "websocket"),
    ) {
        (true, false) => Transports::POLLING,
        (false, true) => Transports::WEBSOCKET,
        _ => Transports::ALL,
    };
    let origins = if args.cors_origins.is_empty() {
        vec!["*".to_string()]
    } else {
        args.cors_origins.clone()
    };
    let origin = if origins.iter().any(|o| o == "*") {
        CorsOrigin::Any
    } else if origins.iter().any(|o| o == "true") {
        CorsOrigin::Reflect
    } else {
        CorsOrigin::List(origins)
    };
    let allow_request = args.allow_request_header.clone().map(|name| {
        let hook: rsio::engine::AllowRequest = Arc::new(move |parts: &http::request::Parts| {
            let ok = parts.headers.contains_key(name.as_str());
            let message = format!("missing {name}");
            Box::pin(async move {
                if ok {
                    Ok(())
                } else {
                    Err(message)
                }
            })
        });
        hook
    });
    // The path stays `None`: `/engine.io/` for the engine, `/socket.io/` for the server.
    let mut c = EngineConfig::default();
    c.ping_interval = Duration::from_millis(args.ping_interval);
    c.ping_timeout = Duration::from_millis(args.ping_timeout);
    c.upgrade_timeout = Duration::from_millis(args.upgrade_timeout);
    c.max_http_buffer_size = args.max_http_buffer_size;
    c.transports = transports;
    c.allow_upgrades = args.allow_upgrades;
    c.cookie = args.cookie.then(CookieOptions::default);
    c.cors = Some(CorsOptions::new(origin).credentials(args.cors_credentials));
    c.allow_request = allow_request;
    c.http_compression_threshold =
        (!args.no_http_compression).then_some(args.http_compression_threshold);
    c.initial_packet = args.initial_packet.clone();
    c.allowed_origins = match &args.allowed_origins {
        Some(list) => AllowedOrigins::SameOriginAnd(list.clone()),
        None => AllowedOrigins::Any,
    };
    if let Some(bytes) = args.max_send_queue_bytes {
        c.max_send_queue_bytes = bytes;
    }
    c.trust_proxy = args.trust_proxy;
    c.allow_eio3 = args.allow_eio3;
    c.per_message_deflate = args.per_message_deflate.map(|threshold| {
        let mut deflate = DeflateConfig::default();
        deflate.threshold = threshold;
        deflate
    });
    c
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

/// The v5 suite's server: `/` and `/custom` emit `auth` with the handshake auth;
/// `/` answers `message` with `message-back` and acks `message-with-ack`.
///
/// `/handshake` (not used by the suites) emits `handshake` with the handshake's
/// JSON view, for tests of what `address()` and `secure()` believe.
fn socket_io_server(args: &Args) -> anyhow::Result<Server> {
    let mut config = ServerConfig::default();
    config.engine = engine_config(args);
    let io = ServerBuilder::from_config(config)
        .connect_timeout(Duration::from_millis(1000))
        .parser(match args.parser.as_str() {
            "msgpack" => rsio::parser::Parser::Msgpack,
            _ => rsio::parser::Parser::Default,
        })
        .try_build()?;
    io.ns("/", |socket: Socket| async move {
        let _ = socket.emit("auth", &(socket.handshake().auth().clone(),));
        socket.on("message", |socket: Socket, args: SioArgs| async move {
            let _ = socket.emit("message-back", args);
        });
        socket.on(
            "message-with-ack",
            |_socket: Socket, args: SioArgs, ack: AckSender| async move {
                let _ = ack.send(args);
            },
        );
    });
    io.ns("/custom", |socket: Socket| async move {
        let _ = socket.emit("auth", &(socket.handshake().auth().clone(),));
    });
    io.ns("/handshake", |socket: Socket| async move {
        let _ = socket.emit("handshake", &(socket.handshake().to_json(),));
    });
    Ok(io)
}

async fn run(args: Args) -> anyhow::Result<()> {
    let io = socket_io_server(&args)?;
    let engine = Engine::try_new(engine_config(&args), Echo)?;
    let stats_engine = engine.clone();
    let app = Router::new()
        .merge(engine.router())
        .merge(io.router())
        .route(
            "/stats",
            get(move || {
                let e = stats_engine.clone();
                async move {
                    let body = serde_json::json!({
                        "clientsCount": e.clients_count(),
                        "connectionErrors": e.connection_errors(),
                    });
                    (
                        [(http::header::CONTENT_TYPE, "application/json")],
                        body.to_string(),
                    )
                }
            }),
        );
    let addr: SocketAddr = format!("{}:{}", args.host, args.port).parse()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    println!("listening on http://{local}");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    rsio::http::serve(listener, app, rsio::http::ServeConfig::default(), shutdown).await?;
    Ok(())
}
