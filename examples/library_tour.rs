//! The program of issue 15, unchanged: rsio as a library, from the prelude.
//! tests/js/library-tour.test.mjs runs it against the official client
//! (`PORT=… cargo run --example library_tour`).

use rsio::prelude::*;
use serde::Deserialize;

#[derive(Clone)]
struct App {
    greeting: String,
}

#[derive(Deserialize)]
struct Msg {
    text: String,
}

#[derive(Clone, Default)]
struct Seen(u32);

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let io = Server::builder()
        .ping_interval(std::time::Duration::from_secs(10))
        .connection_state_recovery(RecoveryConfig::default())
        .with_state(App {
            greeting: "hello".into(),
        })
        .build();
    io.ns("/", |socket: Socket, State(app): State<App>| async move {
        socket.extensions().insert(Seen::default());
        let _ = socket.emit("greeting", &app.greeting);
        socket.on(
            "msg",
            |socket: Socket, TryData(msg): TryData<Msg>, ack: AckSender| async move {
                let seen = socket
                    .extensions()
                    .get::<Seen>()
                    .map(|s| s.0 + 1)
                    .unwrap_or(1);
                socket.extensions().insert(Seen(seen));
                match msg {
                    Ok(m) => {
                        let _ = ack.send(&(m.text, seen));
                    }
                    Err(e) => {
                        let _ = ack.send(&format!("bad message: {e}"));
                    }
                }
            },
        );
        socket.on("ping", |ack: AckSender| async move {
            let _ = ack.send(());
        });
        socket.on("list", |socket: Socket| async move {
            let _ = socket.emit("list", &vec![1, 2, 3]);
        });
    });
    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let app = axum::Router::new().merge(io.router());
    let _ = rsio::http::serve(listener, app, Default::default(), std::future::pending()).await;
    Ok(())
}
