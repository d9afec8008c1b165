//! One Socket.IO client over raw WebSocket frames: the handshake, the room
//! join, and answering pings while idle.

use anyhow::{bail, Context as _, Result};
use futures_util::{SinkExt, StreamExt};
use tokio::{net::TcpStream, sync::watch};
use tokio_tungstenite::{
    client_async_with_config,
    tungstenite::{client::IntoClientRequest, protocol::WebSocketConfig, Message},
    WebSocketStream,
};

use crate::{
    deflate::{self, Conn},
    frame::{self, Frame},
    msgpack,
};

pub type Ws = WebSocketStream<Conn>;

fn url(host: &str, port: u16) -> String {
    format!("ws://{host}:{port}/socket.io/?EIO=4&transport=websocket")
}

pub async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            None => bail!("connection closed"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Binary(b))) => {
                if let Some(t) = msgpack::to_text(&b) {
                    return Ok(t);
                }
            }
            Some(Ok(Message::Close(_))) => bail!("closed by the server"),
            Some(Ok(_)) => {}
        }
    }
}

/// WebSocket handshake, Engine.IO open, Socket.IO connect to `/`.
pub async fn open(host: &str, port: u16) -> Result<Ws> {
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connect {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    // Close with a reset: no TIME_WAIT left on loopback between runs.
    tcp.set_zero_linger()?;
    // tungstenite zero-fills its whole read buffer before every read (also the
    // reads that find nothing): its 128 KiB default made that memset the load
    // generator's main cost. 4 KiB, like rsio and socketioxide.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut request = url(host, port).into_client_request()?;
    if deflate::enabled() {
        request.headers_mut().insert(
            "Sec-WebSocket-Extensions",
            http::HeaderValue::from_static(deflate::OFFER),
        );
    }
    let (mut ws, _) = client_async_with_config(request, Conn::new(tcp), Some(config))
        .await
        .context("websocket handshake")?;
    let t = next_text(&mut ws).await?;
    if frame::parse(&t) != Frame::Open {
        bail!("expected the Engine.IO open packet, got {t:?}");
    }
    ws.send(msgpack::message("40".into())).await?;
    loop {
        let t = next_text(&mut ws).await?;
        match frame::parse(&t) {
            Frame::Connected => return Ok(ws),
            Frame::Ping => ws.send(Message::text("3")).await?,
            Frame::ConnectError(e) => bail!("connect refused: {e}"),
            _ => {}
        }
    }
}

/// Answers pings until `until` completes.
pub async fn idle<F: std::future::Future>(ws: &mut Ws, until: F) -> Result<F::Output> {
    tokio::pin!(until);
    loop {
        tokio::select! {
            out = &mut until => return Ok(out),
            msg = ws.next() => match msg {
                None => bail!("connection closed"),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => {
                    if frame::parse(&t) == Frame::Ping {
                        ws.send(Message::text("3")).await?;
                    }
                }
                Some(Ok(Message::Close(_))) => bail!("closed by the server"),
                Some(Ok(_)) => {}
            }
        }
    }
}

pub async fn wait_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Sends `42<id>["join","room"]` and waits for its ack.
pub async fn join(ws: &mut Ws, room: &str) -> Result<()> {
    ws.send(msgpack::message(frame::join(0, room))).await?;
    loop {
        let t = next_text(ws).await?;
        match frame::parse(&t) {
            Frame::Ack { id: 0, .. } => return Ok(()),
            Frame::Ping => ws.send(Message::text("3")).await?,
            _ => {}
        }
    }
}
