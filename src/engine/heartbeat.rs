//! The life of a session: pings every `pingInterval`, a close after
//! `pingTimeout` without a pong, and the cleanup once it ends. A v3 client
//! pings instead: the session closes after `pingInterval + pingTimeout`
//! without a ping.
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
    /// v3: the client pings, we never do; always waiting for its next ping.
    client_pings: bool,
    close_by: Option<Instant>,
}

impl Heartbeat {
    /// Deadlines count from `opened` (taken before the open packet left), not
    /// from when a task first runs, so a busy runtime cannot make a ping timeout late.
    /// `client_pings` for a v3 session: its first ping is due within
    /// `pingInterval + pingTimeout`.
    pub(crate) fn new(config: &EngineConfig, opened: Instant, client_pings: bool) -> Heartbeat {
        Heartbeat {
            ping_at: opened + config.ping_interval,
            awaiting_pong: client_pings,
            client_pings,
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
            // The pong (or v3 ping) may have come just now, its wake-up not yet seen.
            if self.observe(config, &mut session.lock()) {
                return true;
            }
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
    /// whether the deadline moved. A v3 client's ping (`Session::on_client_ping`)
    /// counts as a pong; the wait for the next one starts here.
    pub(crate) fn observe(&mut self, config: &EngineConfig, st: &mut State) -> bool {
        let pong = self.awaiting_pong && !st.awaiting_pong;
        let closing = st.closing && self.close_by.is_none();
        if pong {
            self.ping_at = Instant::now() + config.ping_interval;
            self.awaiting_pong = self.client_pings;
            st.awaiting_pong = self.client_pings;
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
    let mut beat = Heartbeat::new(config, opened, session.is_v3());
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
                beat.observe(config, &mut session.lock());
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
        let mut beat = Heartbeat::new(&config, opened, false);
        assert_eq!(beat.deadline(&config), opened + config.ping_interval);
        assert!(
            !beat.observe(&config, &mut state(false, false)),
            "no ping out: nothing to see"
        );
        // A ping went out (as `on_timer` does), then its pong came back.
        beat.awaiting_pong = true;
        assert!(
            !beat.observe(&config, &mut state(true, false)),
            "still waiting"
        );
        assert_eq!(
            beat.deadline(&config),
            opened + config.ping_interval + config.ping_timeout
        );
        let before = Instant::now();
        assert!(beat.observe(&config, &mut state(false, false)), "the pong");
        due_within(&beat, &config, before, config.ping_interval);
        let before = Instant::now();
        assert!(beat.observe(&config, &mut state(false, true)), "the close");
        due_within(&beat, &config, before, config.close_timeout);
        assert!(
            !beat.observe(&config, &mut state(false, true)),
            "the close counts once"
        );
    }

    #[test]
    fn v3_waits_for_client_pings_and_never_pings() {
        let config = EngineConfig::default();
        let opened = Instant::now();
        let mut beat = Heartbeat::new(&config, opened, true);
        assert_eq!(
            beat.deadline(&config),
            opened + config.ping_interval + config.ping_timeout,
            "the first ping is due within pingInterval + pingTimeout"
        );
        let mut st = state(true, false);
        assert!(!beat.observe(&config, &mut st), "no ping yet");
        // The client pinged (`Session::on_client_ping` clears the flag).
        st.awaiting_pong = false;
        let before = Instant::now();
        assert!(
            beat.observe(&config, &mut st),
            "the ping moves the deadline"
        );
        assert!(beat.awaiting_pong && st.awaiting_pong, "waits for the next");
        due_within(
            &beat,
            &config,
            before,
            config.ping_interval + config.ping_timeout,
        );
        assert!(!beat.observe(&config, &mut st), "one ping counts once");
    }

    #[test]
    fn v3_timer_closes_without_a_ping_and_sends_none() {
        use crate::engine::{session::Protocol, HandshakeRequest, RequestHeaders, Sid};
        let config = EngineConfig::default();
        let session = Session::new(
            Sid::random(),
            Protocol::V3 {
                binary: false,
                jsonp: None,
            },
            TransportKind::Polling,
            std::sync::Arc::new(HandshakeRequest {
                headers: RequestHeaders::default(),
                url: "/".into(),
                remote_addr: None,
                secure: false,
                issued: std::time::SystemTime::now(),
            }),
            usize::MAX,
            (),
        );
        let overdue = || {
            Instant::now()
                .checked_sub(config.ping_interval + config.ping_timeout)
                .unwrap()
        };
        let mut beat = Heartbeat::new(&config, overdue(), true);
        session.on_client_ping();
        assert!(
            beat.on_timer(&config, &session),
            "a ping whose wake-up was not yet seen still counts"
        );
        assert!(beat.deadline(&config) > Instant::now());
        assert_eq!(session.queued(), 1, "only the pong `3`: no server ping");
        beat.ping_at = overdue();
        assert!(!beat.on_timer(&config, &session));
        assert_eq!(session.close_reason(), Some(CloseReason::PingTimeout));
        assert_eq!(session.queued(), 1, "still no server ping");
    }
}
