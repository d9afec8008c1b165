//! `rsio-bare-echo`: the floor for the echo scenario. A bare tokio-tungstenite
//! server on one current-thread runtime that speaks just enough Engine.IO /
//! Socket.IO for `rsio-loadgen --scenario echo`: it sends the open packet,
//! accepts the connect of `/`, and answers `42<id>["echo",args…]` with
//! `43<id>[args…]` by slicing the text, without a JSON parser, and nothing
//! else (no HTTP router, no heartbeat). A Socket.IO server cannot do less
//! work per ack; `scripts/bench` compares rsio's CPU per ack with it.
//!
//! ```text
//! rsio-bare-echo --port 3000
//! ```

use std::net::SocketAddr;

use anyhow::Result;
use clap::Parser;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message};

#[derive(Parser)]
struct Cli {
    #[arg(long, default_value_t = 3000)]
    port: u16,
}

const OPEN: &str = r#"0{"sid":"bare","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;

/// The ack for an event frame `42<id>["echo",args…]`, if it is one.
fn ack(text: &str) -> Option<String> {
    let body = text.strip_prefix("42")?;
    let digits = body.len() - body.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let (id, rest) = body.split_at(digits);
    let args = rest.strip_prefix("[\"echo\"")?;
    let mut out = String::with_capacity(text.len());
    out.push_str("43");
    out.push_str(id);
    out.push('[');
    out.push_str(args.strip_prefix(',').unwrap_or(args));
    Some(out)
}

async fn serve(tcp: TcpStream) -> Result<()> {
    tcp.set_nodelay(true)?;
    // The read buffer rsio and socketioxide use (tungstenite zero-fills it
    // before every read; its 128 KiB default would inflate this floor).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
    ws.send(Message::text(OPEN)).await?;
    while let Some(msg) = ws.next().await {
        let mut msg = msg?;
        let mut written = false;
        loop {
            if let Message::Text(t) = &msg {
                if t.as_str() == "40" {
                    ws.feed(Message::text(r#"40{"sid":"bare"}"#)).await?;
                    written = true;
                } else if let Some(reply) = ack(t.as_str()) {
                    ws.feed(Message::text(reply)).await?;
                    written = true;
                }
            }
            match ws.next().now_or_never() {
                Some(Some(m)) => msg = m?,
                _ => break,
            }
        }
        if written {
            ws.flush().await?;
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], cli.port))).await?;
        println!("listening on ws://{}", listener.local_addr()?);
        loop {
            let (tcp, _) = listener.accept().await?;
            tokio::task::spawn_local(async move {
                let _ = serve(tcp).await;
            });
        }
    })
}

#[cfg(test)]
mod tests {
    use super::ack;

    #[test]
    fn acks_echo_events() {
        assert_eq!(
            ack(r#"427["echo","abc",1]"#).as_deref(),
            Some(r#"437["abc",1]"#)
        );
        assert_eq!(ack(r#"4212["echo"]"#).as_deref(), Some("4312[]"));
        assert_eq!(ack(r#"42["echo","abc"]"#), None);
        assert_eq!(ack(r#"427["join","r"]"#), None);
    }
}
