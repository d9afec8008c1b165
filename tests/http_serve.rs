//! rsio's accept loop: the connection cap answers 503, the header-read timeout
//! closes slow clients, and shutdown stops accepting.

use std::time::Duration;

use axum::{routing::get, Router};
use rsio::http::{serve, ServeConfig};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

async fn start(config: ServeConfig) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/upgrade", get(upgrade));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = serve(listener, app, config, async {
            let _ = rx.await;
        })
        .await;
    });
    (addr, tx)
}

/// Switches the connection to a raw byte stream (as a WebSocket handshake does)
/// and holds it until the client sends a byte or leaves.
async fn upgrade(mut req: axum::extract::Request) -> axum::response::Response {
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            let mut io = hyper_util::rt::TokioIo::new(upgraded);
            let mut byte = [0u8; 1];
            let _ = io.read(&mut byte).await;
        }
    });
    axum::response::Response::builder()
        .status(101)
        .header("connection", "upgrade")
        .header("upgrade", "raw")
        .body(axum::body::Body::empty())
        .unwrap()
}

/// A `GET /` on a new connection (`connection: close`): the whole answer.
async fn get_root(addr: std::net::SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    read_all(&mut stream).await
}

/// Everything the server sends until it closes (bounded in time).
async fn read_all(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn over_the_connection_cap_is_refused_with_503() {
    let (addr, _stop) = start(ServeConfig {
        max_connections: 1,
        ..ServeConfig::default()
    })
    .await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    first
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = first.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // The first connection stays open (keep-alive): the second is over the cap.
    let mut second = TcpStream::connect(addr).await.unwrap();
    let answer = read_all(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // Once the first one leaves, a new connection is served again.
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = get_root(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let (addr, _stop) = start(ServeConfig {
        header_read_timeout: Duration::from_millis(300),
        ..ServeConfig::default()
    })
    .await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = read_all(&mut slow).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250),
        "closed after {waited:?}"
    );
    assert!(waited < Duration::from_secs(4), "not closed: {waited:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer:?}"
    );
}

#[tokio::test]
async fn shutdown_stops_accepting() {
    let (addr, stop) = start(ServeConfig::default()).await;
    let _ = stop.send(());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
}

#[tokio::test]
async fn an_upgraded_connection_still_counts_against_the_cap() {
    let (addr, _stop) = start(ServeConfig {
        max_connections: 1,
        ..ServeConfig::default()
    })
    .await;
    let mut upgraded = TcpStream::connect(addr).await.unwrap();
    upgraded
        .write_all(
            b"GET /upgrade HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: raw\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = upgraded.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 101"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // The HTTP connection ended with the upgrade, but the socket lives on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut second = TcpStream::connect(addr).await.unwrap();
    let answer = read_all(&mut second).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    // The upgraded stream ends: its place is free again.
    upgraded.write_all(b"x").await.unwrap();
    drop(upgraded);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = get_root(addr).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
}
