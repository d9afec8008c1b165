//! The life of a session: pings every `pingInterval`, a close after
//! `pingTimeout` without a pong, and the cleanup once it ends.
//!
//! A WebSocket session runs its [`Heartbeat`] inside its transport task (one
//! task per connection, not two: the task's size counts per idle client); a
//! session that starts on polling has a task of its own ([`run`]), which
//! outlives the GETs and an upgrade.

use std::{sync::Arc, time::Duration};

use tokio::time::Instant;

use super::{
    config::EngineConfig,
    server::{Engine, EngineHandler},
    session::{CloseReason, Session},
};

/// The three deadlines of a session (next ping, pong due, close deadline),
/// served by one timer.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    interval: Duration,
    timeout: Duration,
    close_timeout: Duration,
    ping_at: Instant,
    awaiting_pong: bool,
    close_by: Option<Instant>,
}

impl Heartbeat {
    /// Deadlines count from `opened` (taken before the open packet left), not
    /// from when a task first runs, so a busy runtime cannot make a ping timeout late.
    pub(crate) fn new(config: &EngineConfig, opened: Instant) -> Heartbeat {
        Heartbeat {
            interval: config.ping_interval,
            timeout: config.ping_timeout,
            close_timeout: config.close_timeout,
            ping_at: opened + config.ping_interval,
            awaiting_pong: false,
            close_by: None,
        }
    }

    /// When the timer must fire next.
    pub(crate) fn deadline(&self) -> Instant {
        let next = if self.awaiting_pong {
            self.ping_at + self.timeout
        } else {
            self.ping_at
        };
        self.close_by.map_or(next, |t| t.min(next))
    }

    /// The timer fired: sends a ping, or ends the session. Returns `false` once
    /// the session has ended.
    pub(crate) fn on_timer<D>(&mut self, session: &Session<D>) -> bool {
        let now = Instant::now();
        if self.close_by.is_some_and(|t| now >= t) {
            // A server-side close waited `close_timeout` for its last delivery.
            session.terminate(CloseReason::ForcedClose);
            return false;
        }
        if self.awaiting_pong && now >= self.ping_at + self.timeout {
            session.terminate(CloseReason::PingTimeout);
            return false;
        }
        if !self.awaiting_pong && now >= self.ping_at {
            session.send_ping();
            self.awaiting_pong = true;
        }
        true
    }

    pub(crate) fn awaiting_pong(&self) -> bool {
        self.awaiting_pong
    }

    /// The pong to our last ping arrived.
    pub(crate) fn on_pong(&mut self) {
        self.awaiting_pong = false;
        self.ping_at = Instant::now() + self.interval;
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.close_by.is_some()
    }

    /// The server asked to close: the last deliveries get `close_timeout`.
    pub(crate) fn on_closing(&mut self) {
        if self.close_by.is_none() {
            self.close_by = Some(Instant::now() + self.close_timeout);
        }
    }
}

/// The heartbeat task of a session that started on polling: runs until the
/// session ends, then removes it from the engine.
pub(crate) async fn run<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    session: Arc<Session<H::Data>>,
    opened: Instant,
) {
    let mut beat = Heartbeat::new(&engine.config, opened);
    let timer = tokio::time::sleep_until(beat.deadline());
    tokio::pin!(timer);
    loop {
        tokio::select! {
            _ = &mut timer => {
                if !beat.on_timer(&session) {
                    break;
                }
            }
            // `on_pong` signals only the pong to our last ping (a stored permit if
            // it comes before this wait is polled).
            _ = session.pong.notified(), if beat.awaiting_pong() => beat.on_pong(),
            _ = session.closing.notified(), if !beat.is_closing() => beat.on_closing(),
            _ = session.closed() => break,
        }
        timer.as_mut().reset(beat.deadline());
    }
    engine.remove(&session);
}
