//! The chat's Socket.IO handlers: the tutorial's end state (messages stored
//! once per client offset, broadcast to every worker, history after
//! `auth.serverOffset`, connection state recovery) plus nicknames, "typing…",
//! an online list, join/leave notices and private messages, across workers.
//!
//! Events from the client (every one is acknowledged when the client asks;
//! bad input gets `{error: "..."}`):
//!
//! | event             | arguments                    | ack                                   |
//! |-------------------|------------------------------|---------------------------------------|
//! | `chat message`    | `msg, clientOffset`          | `{ok, id}` / `{ok, duplicate: true}`  |
//! | `set nick`        | `nick`                       | `{ok, nick}`                          |
//! | `typing`          | `bool`                       | —                                     |
//! | `users`           | —                            | `[{id, nick, worker}]` (cluster-wide) |
//! | `private message` | `to (nick or socket id), text` | `{ok, delivered}`                   |
//! | `whoami`          | —                            | `{id, nick, worker}`                  |
//!
//! Events to the client: `chat message (msg, id, nick)`, `typing ({id, nick}, bool)`
//! (volatile), `user connected ({id, nick})`, `user disconnected ({id, nick, reason})`,
//! `user renamed ({id, old, nick})`, `private message ({from: {id, nick}, to, text})`.

use std::sync::Arc;

use rsio::{
    parser::Args,
    server::{AckSender, Server, Socket},
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{debug, warn};

use crate::db::{Db, Insert};

/// Longest message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 10_000;
/// Longest client offset, in characters.
pub const MAX_OFFSET_CHARS: usize = 128;
/// Longest nickname, in characters.
pub const MAX_NICK_CHARS: usize = 32;
/// Messages read from the database per query when sending history.
const HISTORY_BATCH: usize = 500;

const EVENTS: [&str; 6] = [
    "chat message",
    "set nick",
    "typing",
    "users",
    "private message",
    "whoami",
];

/// What each socket keeps in `socket.data` (restored with the session on recovery).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct User {
    nick: String,
    worker: usize,
}

struct Chat {
    db: Db,
    worker: usize,
}

pub fn install(io: &Server, db: Db, worker: usize) {
    let chat = Arc::new(Chat { db, worker });
    io.ns("/", move |socket: Socket| {
        let chat = chat.clone();
        async move { chat.on_connection(socket).await }
    });
}

/// Answers `{error: message}` when an ack was asked; logs at debug level.
fn reject(socket: &Socket, ack: AckSender, event: &str, message: &str) {
    debug!(target: "chat", id = %socket.id(), event, "rejected: {message}");
    let _ = ack.send_error(message);
}

fn valid_nick(value: &Value) -> Result<String, &'static str> {
    let Some(nick) = value.as_str() else {
        return Err("nick must be a string");
    };
    let nick = nick.trim();
    if nick.is_empty() {
        return Err("nick must not be empty");
    }
    if nick.chars().count() > MAX_NICK_CHARS {
        return Err("nick too long (at most 32 characters)");
    }
    if nick.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("nick must not contain spaces or control characters");
    }
    Ok(nick.to_string())
}

/// `auth.serverOffset`: a number or a numeric string; 0 otherwise.
fn server_offset(auth: &Value) -> i64 {
    match auth.get("serverOffset") {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0).max(0),
        Some(Value::String(s)) => s.trim().parse::<i64>().unwrap_or(0).max(0),
        _ => 0,
    }
}

fn user_of(socket: &Socket) -> User {
    socket.data::<User>().unwrap_or_else(|| User {
        nick: guest_nick(socket),
        worker: 0,
    })
}

fn guest_nick(socket: &Socket) -> String {
    let id = socket.id().to_string();
    let tail: String = id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(4)
        .collect();
    format!("guest-{tail}")
}

impl Chat {
    async fn on_connection(self: Arc<Self>, socket: Socket) {
        // A recovered socket got its data back; its worker may have changed.
        let nick = match socket.data::<User>() {
            Some(user) if socket.recovered() => user.nick,
            _ => socket
                .handshake()
                .auth()
                .get("nick")
                .and_then(|n| valid_nick(n).ok())
                .unwrap_or_else(|| guest_nick(&socket)),
        };
        socket.set_data(&User {
            nick: nick.clone(),
            worker: self.worker,
        });
        self.register(&socket);
        socket.on_disconnect(|s: Socket, reason| {
            let user = user_of(&s);
            let _ = s.namespace().emit(
                "user disconnected",
                &(json!({ "id": s.id().to_string(), "nick": user.nick, "reason": reason.to_string() }),),
            );
        });
        let _ = socket.broadcast().emit(
            "user connected",
            &(json!({ "id": socket.id().to_string(), "nick": nick }),),
        );
        if !socket.recovered() {
            self.send_history(&socket).await;
        }
    }

    /// Every stored message after the client's `auth.serverOffset`, in id order.
    async fn send_history(&self, socket: &Socket) {
        let mut after = server_offset(socket.handshake().auth());
        loop {
            let rows = match self.db.after(after, HISTORY_BATCH).await {
                Ok(rows) => rows,
                Err(err) => {
                    warn!(target: "chat", id = %socket.id(), "cannot read the history: {err}");
                    return;
                }
            };
            for row in &rows {
                if socket
                    .emit("chat message", &(&row.content, row.id, &row.nick))
                    .is_err()
                {
                    return; // gone
                }
            }
            match rows.last() {
                Some(last) if rows.len() == HISTORY_BATCH => after = last.id,
                _ => return,
            }
        }
    }

    fn register(self: &Arc<Self>, socket: &Socket) {
        socket.on_any(|s, event, _args| {
            if !EVENTS.contains(&event) {
                debug!(target: "chat", id = %s.id(), event, "unknown event ignored");
            }
        });

        let chat = self.clone();
        socket.on(
            "chat message",
            move |s: Socket, args: Args, ack: AckSender| {
                let chat = chat.clone();
                async move { chat.on_message(s, args, ack).await }
            },
        );

        socket.on(
            "set nick",
            |s: Socket, args: Args, ack: AckSender| async move {
                let nick = match valid_nick(&args.get::<Value>(0).unwrap_or(Value::Null)) {
                    Ok(n) => n,
                    Err(e) => return reject(&s, ack, "set nick", e),
                };
                let mut user = user_of(&s);
                let old = std::mem::replace(&mut user.nick, nick.clone());
                s.set_data(&user);
                if old != nick {
                    let _ = s.namespace().emit(
                        "user renamed",
                        &(json!({ "id": s.id().to_string(), "old": old, "nick": nick }),),
                    );
                }
                let _ = ack.send(&(json!({ "ok": true, "nick": nick }),));
            },
        );

        socket.on(
            "typing",
            |s: Socket, args: Args, ack: AckSender| async move {
                let typing = match args.get::<Value>(0) {
                    Ok(Value::Bool(b)) => b,
                    _ => return reject(&s, ack, "typing", "typing takes a boolean"),
                };
                let user = user_of(&s);
                // Volatile: a lost "typing" is harmless, and it is never replayed.
                let _ = s.broadcast().volatile().emit(
                    "typing",
                    &(
                        json!({ "id": s.id().to_string(), "nick": user.nick }),
                        typing,
                    ),
                );
                let _ = ack.send(());
            },
        );

        socket.on(
            "users",
            |s: Socket, _args: Args, ack: AckSender| async move {
                match online(&s).await {
                    Ok(list) => {
                        let _ = ack.send(&(list,));
                    }
                    Err(e) => reject(&s, ack, "users", &e),
                }
            },
        );

        socket.on(
            "private message",
            |s: Socket, args: Args, ack: AckSender| async move { private_message(s, args, ack).await },
        );

        let worker = self.worker;
        socket.on(
            "whoami",
            move |s: Socket, _args: Args, ack: AckSender| async move {
                let user = user_of(&s);
                let _ = ack.send(&(
                    json!({ "id": s.id().to_string(), "nick": user.nick, "worker": worker }),
                ));
            },
        );
    }

    /// The tutorial's handler: store once per client offset, broadcast, ack.
    async fn on_message(&self, s: Socket, args: Args, ack: AckSender) {
        const EV: &str = "chat message";
        let msg = match args.get::<Value>(0) {
            Ok(Value::String(m)) => m,
            _ => return reject(&s, ack, EV, "message must be a string"),
        };
        if msg.is_empty() {
            return reject(&s, ack, EV, "message must not be empty");
        }
        if msg.chars().count() > MAX_MESSAGE_CHARS {
            return reject(&s, ack, EV, "message too long (at most 10000 characters)");
        }
        let offset = match args.get::<Value>(1) {
            Ok(Value::String(o)) if !o.is_empty() && o.chars().count() <= MAX_OFFSET_CHARS => o,
            Ok(Value::String(o)) if !o.is_empty() => {
                return reject(
                    &s,
                    ack,
                    EV,
                    "client offset too long (at most 128 characters)",
                )
            }
            _ => return reject(&s, ack, EV, "client offset must be a non-empty string"),
        };
        let nick = user_of(&s).nick;
        // Asked for before the handler first waits, so in arrival order; held
        // until the broadcast, so a client's messages go out in id order.
        let _turn = self.db.write_turn().await;
        match self
            .db
            .insert(msg.clone(), offset, Some(nick.clone()))
            .await
        {
            Ok(Insert::New(id)) => {
                // To everyone, on every worker, the sender included (as the tutorial's io.emit).
                let _ = s.namespace().emit(EV, &(msg, id, nick));
                let _ = ack.send(&(json!({ "ok": true, "id": id }),));
            }
            Ok(Insert::Duplicate) => {
                // A retry of a stored message: acknowledge it, broadcast nothing.
                let _ = ack.send(&(json!({ "ok": true, "duplicate": true }),));
            }
            Err(err) => {
                // As the tutorial: no ack, so the client retries.
                warn!(target: "chat", id = %s.id(), "cannot store a message: {err}");
            }
        }
    }
}

/// Everyone connected to `/`, on every worker, sorted by nick.
async fn online(s: &Socket) -> Result<Vec<Value>, String> {
    let sockets = s
        .namespace()
        .fetch_sockets()
        .await
        .map_err(|e| format!("cannot list users: {e}"))?;
    let mut list: Vec<(String, String, Value)> = sockets
        .into_iter()
        .map(|f| {
            let nick = f
                .data
                .get("nick")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_string();
            let worker = f.data.get("worker").cloned().unwrap_or(Value::Null);
            (nick, f.id.to_string(), worker)
        })
        .collect();
    list.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Ok(list
        .into_iter()
        .map(|(nick, id, worker)| json!({ "id": id, "nick": nick, "worker": worker }))
        .collect())
}

async fn private_message(s: Socket, args: Args, ack: AckSender) {
    const EV: &str = "private message";
    let to = match args.get::<Value>(0) {
        Ok(Value::String(t)) if !t.is_empty() && t.chars().count() <= 64 => t,
        _ => return reject(&s, ack, EV, "recipient must be a nick or a socket id"),
    };
    let text = match args.get::<Value>(1) {
        Ok(Value::String(t)) if !t.is_empty() && t.chars().count() <= MAX_MESSAGE_CHARS => t,
        Ok(Value::String(t)) if !t.is_empty() => {
            return reject(&s, ack, EV, "message too long (at most 10000 characters)")
        }
        _ => return reject(&s, ack, EV, "message must be a non-empty string"),
    };
    let sockets = match s.namespace().fetch_sockets().await {
        Ok(list) => list,
        Err(e) => return reject(&s, ack, EV, &format!("cannot list users: {e}")),
    };
    let me = s.id().to_string();
    let targets: Vec<(String, String)> = sockets
        .iter()
        .filter_map(|f| {
            let id = f.id.to_string();
            let nick = f.data.get("nick").and_then(Value::as_str).unwrap_or("");
            (id != me && (id == to || nick == to)).then(|| (id, nick.to_string()))
        })
        .collect();
    let Some((_, to_nick)) = targets.first().cloned() else {
        return reject(&s, ack, EV, &format!("no such user: {to}"));
    };
    let user = user_of(&s);
    let rooms: Vec<String> = targets.iter().map(|(id, _)| id.clone()).collect();
    let _ = s.namespace().to(rooms).emit(
        EV,
        &(json!({ "from": { "id": me, "nick": user.nick }, "to": to_nick, "text": text }),),
    );
    let _ = ack.send(&(json!({ "ok": true, "delivered": targets.len(), "to": to_nick }),));
}
