//! A socket's event handlers, in process: registering an event twice keeps the
//! last handler, `off` removes one, and the others keep working.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rsio::{
    parser::Args,
    server::{Server, ServerConfig, Socket},
};
use tokio_tungstenite::tungstenite::Message;

type Client = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

async fn start() -> std::net::SocketAddr {
    let io = Server::new(ServerConfig::default());
    io.ns("/", |socket: Socket| async move {
        socket.on("a", |s: Socket, _: Args| async move {
            let _ = s.emit("reply", &("first",));
        });
        // Replaces the handler above.
        socket.on("a", |s: Socket, _: Args| async move {
            let _ = s.emit("reply", &("second",));
        });
        socket.on("b", |s: Socket, _: Args| async move {
            let _ = s.emit("reply", &("b",));
        });
        socket.on("off-b", |s: Socket, _: Args| async move {
            s.off("b");
            let _ = s.emit("reply", &("b is off",));
        });
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rsio::http::serve(
        listener,
        io.router(),
        rsio::http::ServeConfig::default(),
        std::future::pending::<()>(),
    ));
    addr
}

async fn recv(ws: &mut Client) -> String {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a message within 5 s")
            .expect("the connection is open")
            .expect("a WebSocket message");
        if let Message::Text(text) = msg {
            if text.as_str() == "2" {
                ws.send(Message::text("3")).await.unwrap();
                continue;
            }
            return text.as_str().to_owned();
        }
    }
}

#[tokio::test]
async fn last_registration_wins_and_off_removes() {
    let addr = start().await;
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    assert!(recv(&mut ws).await.starts_with("0{"), "open packet");
    ws.send(Message::text("40")).await.unwrap();
    assert!(recv(&mut ws).await.starts_with("40{"), "CONNECT reply");

    ws.send(Message::text(r#"42["a"]"#)).await.unwrap();
    assert_eq!(recv(&mut ws).await, r#"42["reply","second"]"#);
    ws.send(Message::text(r#"42["b"]"#)).await.unwrap();
    assert_eq!(recv(&mut ws).await, r#"42["reply","b"]"#);
    ws.send(Message::text(r#"42["off-b"]"#)).await.unwrap();
    assert_eq!(recv(&mut ws).await, r#"42["reply","b is off"]"#);
    // `b` has no handler now: the next reply is the one to `a`.
    ws.send(Message::text(r#"42["b"]"#)).await.unwrap();
    ws.send(Message::text(r#"42["a"]"#)).await.unwrap();
    assert_eq!(recv(&mut ws).await, r#"42["reply","second"]"#);
}
