//! `rsio-bare-echo`: the floor for the echo and rooms scenarios. A bare
//! tokio-tungstenite server on one current-thread runtime that speaks just
//! enough Engine.IO / Socket.IO for `rsio-loadgen`: it sends the open packet,
//! accepts the connect of `/`, answers `42<id>["echo",args…]` with
//! `43<id>[args…]`, and for `rooms` takes `42<id>["join","room"]` (acked) and
//! sends each `42["broadcast","room",payload]` as `42["bcast",payload]` to
//! the room's members in this process, one frame shared by all, by slicing
//! the text, without a JSON parser, and nothing else (no HTTP router, no
//! heartbeat, no rooms across processes). A Socket.IO server cannot do less
//! work per ack or per delivery; `scripts/bench` compares rsio with it, and
//! runs W copies on one core as the floor of `rooms --placement local`: what
//! W processes sharing a core cost on this machine, whatever the server.
//!
//! ```text
//! rsio-bare-echo --port 3000
//! ```

use std::{cell::RefCell, collections::HashMap, net::SocketAddr, rc::Rc};

use anyhow::Result;
use clap::Parser;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
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

/// Room name → the outgoing queues of its members in this process, by
/// connection number.
type Rooms = Rc<RefCell<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Message>)>>>>;

/// `42<id>["join","<room>"]` → (id, room).
fn join(text: &str) -> Option<(&str, &str)> {
    let body = text.strip_prefix("42")?;
    let digits = body.len() - body.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (id, rest) = body.split_at(digits);
    let room = rest.strip_prefix("[\"join\",\"")?.strip_suffix("\"]")?;
    (digits > 0).then_some((id, room))
}

/// `42["broadcast","<room>",payload]` → (room, the `bcast` frame to send).
fn broadcast(text: &str) -> Option<(&str, String)> {
    let rest = text.strip_prefix("42[\"broadcast\",\"")?;
    let (room, payload) = rest.split_once("\",")?;
    Some((room, format!("42[\"bcast\",{payload}")))
}

/// What one text frame asks for: a reply written to this connection (true
/// if one was queued).
async fn answer(
    ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>,
    text: &str,
    me: (u64, &mpsc::UnboundedSender<Message>),
    rooms: &Rooms,
    joined: &mut Vec<String>,
) -> Result<bool> {
    if text == "40" {
        ws.feed(Message::text(r#"40{"sid":"bare"}"#)).await?;
    } else if let Some(reply) = ack(text) {
        ws.feed(Message::text(reply)).await?;
    } else if let Some((id, room)) = join(text) {
        rooms
            .borrow_mut()
            .entry(room.to_string())
            .or_default()
            .push((me.0, me.1.clone()));
        joined.push(room.to_string());
        ws.feed(Message::text(format!("43{id}[\"ok\"]"))).await?;
    } else if let Some((room, frame)) = broadcast(text) {
        let frame = Message::text(frame);
        if let Some(members) = rooms.borrow().get(room) {
            for (_, tx) in members {
                let _ = tx.send(frame.clone());
            }
        }
        return Ok(false);
    } else {
        return Ok(false);
    }
    Ok(true)
}

async fn serve(tcp: TcpStream, me: u64, rooms: Rooms) -> Result<()> {
    tcp.set_nodelay(true)?;
    // The read buffer rsio and socketioxide use (tungstenite zero-fills it
    // before every read; its 128 KiB default would inflate this floor).
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut ws = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await?;
    ws.send(Message::text(OPEN)).await?;
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let mut joined = Vec::new();
    let result: Result<()> = async {
        loop {
            tokio::select! {
                msg = ws.next() => {
                    let Some(msg) = msg else { return Ok(()) };
                    let mut msg = msg?;
                    let mut written = false;
                    loop {
                        if let Message::Text(t) = &msg {
                            written |= answer(&mut ws, t.as_str(), (me, &tx), &rooms, &mut joined).await?;
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
                Some(out) = rx.recv() => {
                    ws.feed(out).await?;
                    while let Ok(out) = rx.try_recv() {
                        ws.feed(out).await?;
                    }
                    ws.flush().await?;
                }
            }
        }
    }
    .await;
    let mut rooms = rooms.borrow_mut();
    for room in joined {
        if let Some(members) = rooms.get_mut(&room) {
            members.retain(|(id, _)| *id != me);
            if members.is_empty() {
                rooms.remove(&room);
            }
        }
    }
    result
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
        let rooms = Rooms::default();
        for me in 0u64.. {
            let (tcp, _) = listener.accept().await?;
            let rooms = rooms.clone();
            tokio::task::spawn_local(async move {
                let _ = serve(tcp, me, rooms).await;
            });
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::{ack, broadcast, join};

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

    #[test]
    fn joins_and_broadcasts_by_slicing() {
        assert_eq!(join(r#"420["join","room-7"]"#), Some(("0", "room-7")));
        assert_eq!(join(r#"42["join","r"]"#), None);
        assert_eq!(
            broadcast(r#"42["broadcast","room-7","0001.7.3.xx"]"#),
            Some(("room-7", r#"42["bcast","0001.7.3.xx"]"#.to_string()))
        );
        assert_eq!(broadcast(r#"42["echo","a"]"#), None);
    }
}
