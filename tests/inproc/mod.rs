//! In-process servers and raw Socket.IO clients over WebSocket, for tests that
//! look inside the server (socket counts, ack waiters) while clients talk to it.
//!
//! Every wait is bounded by [`STEP`]: a hung server fails the test.
#![allow(dead_code)]

use std::{future::Future, net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Upper bound of any one wait.
pub const STEP: Duration = Duration::from_secs(5);

type Ws = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Serves `router` on a free loopback port.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rsio::http::serve(
        listener,
        router,
        rsio::http::ServeConfig::default(),
        std::future::pending::<()>(),
    ));
    addr
}

/// Runs `fut` under [`STEP`], failing with `what` on timeout.
pub async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(STEP, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {STEP:?}: {what}"))
}

/// Waits until `cond` holds, looking every few milliseconds, for at most [`STEP`].
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// One HTTP/1.1 request on a new connection; the response as text (empty if
/// the server dropped the connection).
pub async fn http(addr: std::net::SocketAddr, head: &str, body: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{head} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = within("an HTTP response", tcp.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// A polling client joined to `/` that never polls again: whatever the
/// server sends it stays in its session's queue, and it never acknowledges.
pub async fn silent_polling_client(addr: SocketAddr) {
    let open = http(addr, "GET /socket.io/?EIO=4&transport=polling", "").await;
    let sid = open
        .split("\"sid\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("an open packet: {open}"))
        .to_owned();
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let posted = http(addr, &format!("POST {path}"), "40").await;
    assert!(posted.starts_with("HTTP/1.1 200"), "{posted}");
    let reply = http(addr, &format!("GET {path}"), "").await;
    assert!(reply.contains("40{"), "CONNECT reply: {reply}");
}

/// A raw Socket.IO client on a WebSocket-only Engine.IO session; it answers
/// the server's pings while it waits.
pub struct Client {
    ws: Ws,
}

impl Client {
    /// An Engine.IO session with its open packet read, no namespace joined.
    pub async fn open(addr: SocketAddr, path: &str) -> Client {
        let url = format!("ws://{addr}{path}?EIO=4&transport=websocket");
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (ws, _) = within(
            "WebSocket handshake",
            tokio_tungstenite::client_async(url, tcp),
        )
        .await
        .unwrap();
        let mut client = Client { ws };
        let open = client.recv().await.expect("an open packet");
        assert!(open.starts_with("0{"), "open packet: {open}");
        client
    }

    /// A session joined to `nsp`; panics unless the CONNECT is accepted.
    pub async fn connect(addr: SocketAddr, nsp: &str) -> Client {
        let mut client = Client::open(addr, "/socket.io/").await;
        let reply = client.join(nsp).await;
        assert!(
            reply.starts_with(&connect_prefix(nsp, '0')),
            "CONNECT reply: {reply}"
        );
        client
    }

    /// Sends CONNECT for `nsp` and returns the server's answer.
    pub async fn join(&mut self, nsp: &str) -> String {
        let packet = if nsp == "/" {
            "40".to_string()
        } else {
            format!("40{nsp},")
        };
        self.send(&packet).await;
        self.recv().await.expect("an answer to CONNECT")
    }

    pub async fn send(&mut self, text: &str) {
        within("a send", self.ws.send(Message::text(text)))
            .await
            .unwrap();
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        within("a send", self.ws.send(Message::binary(data.to_vec())))
            .await
            .unwrap();
    }

    /// The next binary frame (text frames but pings are an error).
    pub async fn recv_binary(&mut self) -> Vec<u8> {
        within("a binary message", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                        let _ = self.ws.send(Message::text("3")).await;
                    }
                    Some(Ok(Message::Binary(data))) => return data.to_vec(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    other => panic!("expected a binary frame, got {other:?}"),
                }
            }
        })
        .await
    }

    /// The next text frame that is not a ping; `None` once the connection is closed.
    pub async fn recv(&mut self) -> Option<String> {
        within("a message", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(text))) if text.as_str() == "2" => {
                        let _ = self.ws.send(Message::text("3")).await;
                    }
                    Some(Ok(Message::Text(text))) => return Some(text.as_str().to_owned()),
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await
    }

    /// Sends `42<nsp>["echo",n]` and checks that the echo comes back.
    pub async fn echo(&mut self, nsp: &str, n: u32) {
        let prefix = if nsp == "/" {
            "42".to_string()
        } else {
            format!("42{nsp},")
        };
        self.send(&format!("{prefix}[\"echo\",{n}]")).await;
        assert_eq!(
            self.recv().await.as_deref(),
            Some(format!("{prefix}[\"echo\",{n}]").as_str())
        );
    }

    /// Reads (and drops) everything the server sends, answering pings, until
    /// the connection closes: a client that never acknowledges.
    pub fn drain(mut self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            while let Some(msg) = self.ws.next().await {
                match msg {
                    Ok(Message::Text(text)) if text.as_str() == "2" => {
                        let _ = self.ws.send(Message::text("3")).await;
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        })
    }

    pub async fn close(mut self) {
        let _ = within("a close", self.ws.close(None)).await;
    }
}

/// `4<type><nsp>,` as the server writes it (`40`, `41/admin,`, …).
pub fn connect_prefix(nsp: &str, kind: char) -> String {
    if nsp == "/" {
        format!("4{kind}")
    } else {
        format!("4{kind}{nsp},")
    }
}
