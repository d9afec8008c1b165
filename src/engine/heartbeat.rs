//! The life of a session: pings every `pingInterval`, a close after
//! `pingTimeout` without a pong, and the cleanup once it ends.

use std::sync::Arc;

use tokio::time::Instant;

use super::{
    server::{Engine, EngineHandler},
    session::{CloseReason, Session},
};

/// Runs until the session ends, then removes it from the engine.
///
/// Deadlines count from `opened` (taken before the open packet left), not from
/// when this task first runs, so a busy runtime cannot make a ping timeout late.
pub(crate) async fn run<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    session: Arc<Session<H::Data>>,
    opened: Instant,
) {
    let interval = engine.config.ping_interval;
    let timeout = engine.config.ping_timeout;
    // One timer for all three deadlines (next ping, pong due, close deadline):
    // this task lives as long as the connection, so its size counts per client.
    let mut ping_at = opened + interval;
    let mut awaiting_pong = false;
    let mut close_by: Option<Instant> = None;
    let timer = tokio::time::sleep_until(ping_at);
    tokio::pin!(timer);
    loop {
        tokio::select! {
            _ = &mut timer => {
                let now = Instant::now();
                if close_by.is_some_and(|t| now >= t) {
                    // A server-side close waited `close_timeout` for its last delivery.
                    session.terminate(CloseReason::ForcedClose);
                    break;
                }
                if awaiting_pong && now >= ping_at + timeout {
                    session.terminate(CloseReason::PingTimeout);
                    break;
                }
                if !awaiting_pong && now >= ping_at {
                    session.send_ping();
                    awaiting_pong = true;
                }
            }
            // `on_pong` signals only the pong to our last ping (a stored permit if
            // it comes before this wait is polled).
            _ = session.pong.notified(), if awaiting_pong => {
                awaiting_pong = false;
                ping_at = Instant::now() + interval;
            }
            _ = session.closing.notified(), if close_by.is_none() => {
                close_by = Some(Instant::now() + engine.config.close_timeout);
            }
            _ = session.closed().cancelled() => break,
        }
        let next = if awaiting_pong {
            ping_at + timeout
        } else {
            ping_at
        };
        timer.as_mut().reset(close_by.map_or(next, |t| t.min(next)));
    }
    engine.remove(&session);
}
