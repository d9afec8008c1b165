//! systemd's notify protocol, spoken by the primary only (workers never see
//! `NOTIFY_SOCKET`).

use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

/// Whether systemd (or a test) listens: `NOTIFY_SOCKET` is set.
pub(crate) fn enabled() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

fn send(states: &[NotifyState<'_>]) {
    if !enabled() {
        return;
    }
    if let Err(err) = sd_notify::notify(states) {
        debug!(target: "cluster", "sd_notify: {err}");
    }
}

pub(crate) fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub(crate) fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

pub(crate) fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// Half the watchdog period, when systemd asked for pings.
pub(crate) fn watchdog_interval() -> Option<Duration> {
    if !enabled() {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(10)))
}
