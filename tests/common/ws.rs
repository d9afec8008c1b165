//! WebSocket clients: tokio-tungstenite for ordinary traffic, and a tiny raw frame codec for
//! frames the tungstenite client will not help with (oversized frames).

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use super::http::read_line;
use super::{eio_raw_path, parse_open, within, Server, STEP};

impl Server {
    /// WebSocket to `/engine.io/?<query>`: handshake result (an HTTP refusal is an `Err`).
    pub async fn try_ws(&self, query: &str) -> Result<Ws, tungstenite::Error> {
        let url = format!("ws://{}{}", self.addr, eio_raw_path(query));
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let config = WebSocketConfig::default()
            .max_message_size(Some(64 << 20))
            .max_frame_size(Some(64 << 20));
        let (inner, _resp) = within(
            "WebSocket handshake",
            tokio_tungstenite::client_async_with_config(url, tcp, Some(config)),
        )
        .await?;
        Ok(Ws { inner })
    }

    pub async fn ws(&self, query: &str) -> Ws {
        self.try_ws(query)
            .await
            .unwrap_or_else(|e| panic!("WebSocket {query}: {e}"))
    }

    /// A WebSocket-only session: returns the socket and the open packet's JSON.
    pub async fn ws_session(&self) -> (Ws, Value) {
        let mut ws = self.ws("EIO=4&transport=websocket").await;
        let open = ws.recv_open().await;
        (ws, open)
    }

    /// Asserts that a WebSocket to `query` is refused: either the HTTP handshake fails, or the
    /// socket is closed before any Engine.IO packet (other than nothing) is received.
    pub async fn assert_ws_refused(&self, query: &str) {
        match self.try_ws(query).await {
            Err(_) => {}
            Ok(mut ws) => match ws.recv_any().await {
                None | Some(Frame::Close(_)) => {}
                Some(other) => panic!("WebSocket {query} should be refused, got {other:?}"),
            },
        }
    }
}

/// What a WebSocket delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    /// close frame with its code, if any
    Close(Option<u16>),
}

pub struct Ws {
    pub inner: WebSocketStream<TcpStream>,
}

impl Ws {
    /// Next text/binary/close frame (WebSocket-level ping/pong skipped); `None` when the
    /// connection ended without a close frame (EOF or error). Panics after `STEP`.
    pub async fn recv_any(&mut self) -> Option<Frame> {
        within("WebSocket frame", async {
            loop {
                match self.inner.next().await {
                    None | Some(Err(_)) => return None,
                    Some(Ok(Message::Text(t))) => return Some(Frame::Text(t.as_str().to_owned())),
                    Some(Ok(Message::Binary(b))) => return Some(Frame::Binary(b.to_vec())),
                    Some(Ok(Message::Close(c))) => {
                        return Some(Frame::Close(c.map(|f| u16::from(f.code))))
                    }
                    Some(Ok(_)) => continue,
                }
            }
        })
        .await
    }

    /// Next frame, which must be a text frame.
    pub async fn recv_text(&mut self) -> String {
        match self.recv_any().await {
            Some(Frame::Text(t)) => t,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// Next text frame, answering Engine.IO pings (`2`) with pongs (`3`) on the way.
    pub async fn recv_text_answering_pings(&mut self) -> String {
        loop {
            let t = self.recv_text().await;
            if t == "2" {
                self.send_text("3").await;
                continue;
            }
            return t;
        }
    }

    /// Reads the open packet.
    pub async fn recv_open(&mut self) -> Value {
        let t = self.recv_text().await;
        parse_open(&t)
    }

    pub async fn send_text(&mut self, text: &str) {
        within("WebSocket send", self.inner.send(Message::text(text)))
            .await
            .unwrap_or_else(|e| panic!("sending {text:?}: {e}"));
    }

    pub async fn send_binary(&mut self, data: &[u8]) {
        within(
            "WebSocket send",
            self.inner.send(Message::binary(data.to_vec())),
        )
        .await
        .unwrap_or_else(|e| panic!("sending binary: {e}"));
    }

    /// Sends, ignoring failures (the server may already have closed).
    pub async fn send_text_lossy(&mut self, text: &str) {
        let _ = tokio::time::timeout(STEP, self.inner.send(Message::text(text))).await;
    }

    /// Waits until the server closes the connection (close frame, EOF or reset), skipping
    /// any Engine.IO packet it sends first and answering heartbeat pings, so that a server
    /// that does not close fails this wait instead of closing on ping timeout. Returns the
    /// close code, if a close frame came.
    pub async fn expect_closed(&mut self) -> Option<u16> {
        within("WebSocket closed by the server", async {
            loop {
                match self.recv_any().await {
                    None => return None,
                    Some(Frame::Close(code)) => return code,
                    Some(Frame::Text(t)) if t == "2" => self.send_text_lossy("3").await,
                    Some(_) => continue,
                }
            }
        })
        .await
    }

    /// Waits until the server closes the connection without answering anything (for the
    /// ping-timeout tests). Returns the Engine.IO packets received before the close.
    pub async fn expect_closed_silently(&mut self) -> Vec<Frame> {
        let mut seen = Vec::new();
        within("WebSocket closed by the server", async {
            loop {
                match self.recv_any().await {
                    None | Some(Frame::Close(_)) => return,
                    Some(f) => seen.push(f),
                }
            }
        })
        .await;
        seen
    }
}

// ---------------------------------------------------------------------------------------------
// Raw WebSocket (for frames the tungstenite client will not help with)
// ---------------------------------------------------------------------------------------------

/// Performs a WebSocket handshake on a raw TCP connection; returns the stream after `101`.
pub async fn raw_ws_connect(server: &Server, query: &str) -> BufReader<TcpStream> {
    let mut stream = server.connect().await;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        eio_raw_path(query),
        server.addr
    );
    within("raw ws request", stream.write_all(req.as_bytes()))
        .await
        .expect("write upgrade request");
    let mut reader = BufReader::new(stream);
    let status = within("raw ws 101", read_line(&mut reader))
        .await
        .expect("status line");
    assert!(status.contains(" 101"), "expected 101, got {status:?}");
    loop {
        let line = within("raw ws headers", read_line(&mut reader))
            .await
            .expect("header line");
        if line.is_empty() {
            break;
        }
    }
    reader
}

/// A client frame (FIN set, masked) header for `len` payload bytes, masking key all zero
/// bytes so the payload can be written as is.
pub fn raw_ws_frame_header(opcode: u8, len: usize) -> Vec<u8> {
    let mut h = vec![0x80 | opcode];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&(len as u64).to_be_bytes());
    }
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// Reads one server frame: (opcode, payload). `None` on EOF/error.
pub async fn raw_ws_read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    r.read_exact(&mut h).await.ok()?;
    let opcode = h[0] & 0x0f;
    let masked = h[1] & 0x80 != 0;
    let mut len = (h[1] & 0x7f) as u64;
    if len == 126 {
        let mut b = [0u8; 2];
        r.read_exact(&mut b).await.ok()?;
        len = u16::from_be_bytes(b) as u64;
    } else if len == 127 {
        let mut b = [0u8; 8];
        r.read_exact(&mut b).await.ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut mask = [0u8; 4];
    if masked {
        r.read_exact(&mut mask).await.ok()?;
    }
    let mut payload = vec![0u8; len as usize];
    r.read_exact(&mut payload).await.ok()?;
    if masked {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= mask[i % 4];
        }
    }
    Some((opcode, payload))
}
