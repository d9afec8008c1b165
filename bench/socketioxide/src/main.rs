//! The socketioxide peer of the rsio benchmark: socketioxide 0.18 running the
//! bench contract (shared/bench-contract.md), like examples/bench.rs for rsio.
//!
//! ```text
//! PORT=3000 rsio-bench-socketioxide                 # SIO_THREADS=1 (default): current-thread runtime
//! PORT=3000 SIO_THREADS=4 rsio-bench-socketioxide   # multi-thread runtime with 4 workers
//! ```
//!
//! Single process only (socketioxide has no multi-process cluster adapter of
//! its own), so the cross-worker scenario leaves it out. Connection state
//! recovery: not enabled.

use std::{convert::Infallible, sync::Arc};

use hyper_util::rt::TokioIo;
use serde_json::Value;
use socketioxide::{
    adapter::Adapter,
    extract::{AckSender, Data, SocketRef},
    handler::FromMessageParts,
    socket::Socket,
    SocketIo,
};

/// The ack id of the packet, if it asked for one (socketioxide's `AckSender`
/// does not tell).
struct AckId(Option<i64>);

impl<A: Adapter> FromMessageParts<A> for AckId {
    type Error = Infallible;
    fn from_message_parts(
        _: &Arc<Socket<A>>,
        _: &mut socketioxide_core::Value,
        ack_id: &Option<i64>,
    ) -> Result<Self, Infallible> {
        Ok(AckId(*ack_id))
    }
}

fn install(io: &SocketIo) {
    let io2 = io.clone();
    io.ns("/", async move |socket: SocketRef| {
        socket.on(
            "echo",
            async |s: SocketRef, Data(args): Data<Value>, AckId(id): AckId, ack: AckSender| {
                if id.is_some() {
                    let _ = ack.send(&args);
                } else {
                    let _ = s.emit("echo", &args);
                }
            },
        );
        socket.on(
            "join",
            async |s: SocketRef, Data(room): Data<String>, ack: AckSender| {
                s.join(room);
                let _ = ack.send("ok");
            },
        );
        let io = io2.clone();
        socket.on(
            "broadcast",
            async move |Data((room, payload)): Data<(String, Value)>, ack: AckSender| {
                let _ = io.within(room).emit("bcast", &payload).await;
                let _ = ack.send("ok");
            },
        );
        let io = io2.clone();
        socket.on("broadcast_all", async move |Data(payload): Data<Value>| {
            let _ = io.emit("bcast", &payload).await;
        });
    });
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::var("PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(3000);
    let threads: usize = std::env::var("SIO_THREADS")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(async move {
        let (svc, io) = SocketIo::builder().build_svc();
        install(&io);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            let _ = tcp.set_nodelay(true);
            let svc = svc.clone();
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    })
}
