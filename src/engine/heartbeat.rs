//! The life of a session: pings every `pingInterval`, a close after
//! `pingTimeout` without a pong, and the cleanup once it ends.
//!
//! A WebSocket session runs its [`Heartbeat`] inside its transport task (one
//! task per connection, not two: the task's size counts per idle client); a
//! session that starts on polling has a task of its own ([`run`]), which
//! outlives the GETs and an upgrade.

use std::sync::Arc;

use tokio::time::Instant;

use super::{
    config::EngineConfig,
    server::{Engine, EngineHandler, SessionTask},
    session::{CloseReason, Session, State},
};

/// The three deadlines of a session (next ping, pong due, close deadline),
/// served by one timer.
///
/// The durations are read from the engine's config on each call rather than
/// copied here: this lives in every WebSocket task.
#[derive(Debug)]
pub(crate) struct Heartbeat {
    ping_at: Instant,
    awaiting_pong: bool,
    close_by: Option<Instant>,
}

impl Heartbeat {
    /// Deadlines count from `opened` (taken before the open packet left), not
    /// from when a task first runs, so a busy runtime cannot make a ping timeout late.
    pub(crate) fn new(config: &EngineConfig, opened: Instant) -> Heartbeat {
        Heartbeat {
            ping_at: opened + config.ping_interval,
            awaiting_pong: false,
            close_by: None,
        }
    }

    /// When the timer must fire next.
    pub(crate) fn deadline(&self, config: &EngineConfig) -> Instant {
        let next = if self.awaiting_pong {
            self.ping_at + config.ping_timeout
        } else {
            self.ping_at
        };
        self.close_by.map_or(next, |t| t.min(next))
    }

    /// The timer fired: sends a ping, or ends the session. Returns `false` once
    /// the session has ended.
    pub(crate) fn on_timer<D>(&mut self, config: &EngineConfig, session: &Session<D>) -> bool {
        let now = Instant::now();
        if self.close_by.is_some_and(|t| now >= t) {
            // A server-side close waited `close_timeout` for its last delivery.
            session.terminate(CloseReason::ForcedClose);
            return false;
        }
        if self.awaiting_pong && now >= self.ping_at + config.ping_timeout {
            session.terminate(CloseReason::PingTimeout);
            return false;
        }
        if !self.awaiting_pong && now >= self.ping_at {
            session.send_ping();
            self.awaiting_pong = true;
        }
        true
    }

    /// Takes in what the session's state says since the last look: the pong to
    /// our last ping (`Session::on_pong` clears `awaiting_pong`), or a
    /// server-side close (the last deliveries get `close_timeout`). Returns
    /// whether the deadline moved.
    pub(crate) fn observe(&mut self, config: &EngineConfig, st: &State) -> bool {
        let pong = self.awaiting_pong && !st.awaiting_pong;
        let closing = st.closing && self.close_by.is_none();
        if pong {
            self.awaiting_pong = false;
            self.ping_at = Instant::now() + config.ping_interval;
        }
        if closing {
            self.close_by = Some(Instant::now() + config.close_timeout);
        }
        pong || closing
    }
}

/// The heartbeat task of a session that started on polling: runs until the
/// session ends, then removes it from the engine.
pub(crate) async fn run<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    session: Arc<Session<H::Data>>,
    opened: Instant,
) {
    // Removes the session at the end, even if this task unwinds or is cancelled.
    let task = SessionTask::new(engine, session, true);
    let (engine, session) = (&task.engine, &task.session);
    let config = &engine.config;
    let mut beat = Heartbeat::new(config, opened);
    let timer = tokio::time::sleep_until(beat.deadline(config));
    tokio::pin!(timer);
    loop {
        tokio::select! {
            _ = &mut timer => {
                if !beat.on_timer(config, session) {
                    break;
                }
            }
            // A pong to our last ping, or a server-side close (a stored permit
            // if it comes before this wait is polled).
            _ = session.beat.notified() => {
                beat.observe(config, &session.lock());
            }
            _ = session.closed() => break,
        }
        timer.as_mut().reset(beat.deadline(config));
    }
    engine.remove(session);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::engine::session::{TransportKind, Upgrade};

    fn state(awaiting_pong: bool, closing: bool) -> State {
        State {
            transport: TransportKind::WebSocket,
            upgrade: Upgrade::None,
            queue: Default::default(),
            queued_bytes: 0,
            get_pending: false,
            post_pending: false,
            awaiting_pong,
            closing,
        }
    }

    /// `deadline` lies `after` past a moment between `before` and now.
    fn due_within(beat: &Heartbeat, config: &EngineConfig, before: Instant, after: Duration) {
        let deadline = beat.deadline(config);
        assert!(deadline >= before + after && deadline <= Instant::now() + after);
    }

    #[test]
    fn observes_the_awaited_pong_and_the_close_once() {
        let config = EngineConfig::default();
        let opened = Instant::now();
        let mut beat = Heartbeat::new(&config, opened);
        assert_eq!(beat.deadline(&config), opened + config.ping_interval);
        assert!(
            !beat.observe(&config, &state(false, false)),
            "no ping out: nothing to see"
        );
        // A ping went out (as `on_timer` does), then its pong came back.
        beat.awaiting_pong = true;
        assert!(!beat.observe(&config, &state(true, false)), "still waiting");
        assert_eq!(
            beat.deadline(&config),
            opened + config.ping_interval + config.ping_timeout
        );
        let before = Instant::now();
        assert!(beat.observe(&config, &state(false, false)), "the pong");
        due_within(&beat, &config, before, config.ping_interval);
        let before = Instant::now();
        assert!(beat.observe(&config, &state(false, true)), "the close");
        due_within(&beat, &config, before, config.close_timeout);
        assert!(
            !beat.observe(&config, &state(false, true)),
            "the close counts once"
        );
    }
}
