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
    let closed = session.closed().clone();
    let beat = async {
        let mut ping_at = opened + interval;
        loop {
            tokio::time::sleep_until(ping_at).await;
            // Registered before the ping leaves, so a fast pong cannot be missed.
            let pong = session.pong.notified();
            session.send_ping();
            tokio::select! {
                _ = pong => ping_at = Instant::now() + interval,
                _ = tokio::time::sleep_until(ping_at + timeout) => {
                    session.terminate(CloseReason::PingTimeout);
                    return;
                }
            }
        }
    };
    let closing_deadline = async {
        // A server-side close waits at most `close_timeout` for its last delivery.
        session.closing.notified().await;
        tokio::time::sleep(engine.config.close_timeout).await;
        session.terminate(CloseReason::ForcedClose);
    };
    tokio::select! {
        _ = beat => {}
        _ = closing_deadline => {}
        _ = closed.cancelled() => {}
    }
    engine.remove(&session);
}
