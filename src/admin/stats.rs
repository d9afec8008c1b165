//! `server_stats`, every 2 s from every worker: its id, its clients, its
//! namespaces, and what happened since the last one (the aggregated events of
//! the page's dashboard charts), sent to the admin namespace through the adapter.
//!
//! The aggregated events are the differences of the process's
//! [`metrics`](crate::metrics) counters between two reports: they cost nothing on
//! the message path beyond those counters.

use std::{
    sync::{Arc, OnceLock, Weak},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::time::MissedTickBehavior;

use super::{events::Hub, AdminOptions};
use crate::{
    engine::{Engine, TransportKind},
    metrics::{counter, DISCONNECT_REASONS, REFUSAL_CODES},
    server::{ClientHandler, Server},
};

/// How often each worker sends its stats (the package's interval).
pub const EVERY: Duration = Duration::from_secs(2);

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Starts the stats task of `server`; it ends when the server is dropped.
pub fn spawn(server: &Server, hub: Arc<Hub>, options: Arc<AdminOptions>) {
    STARTED.get_or_init(Instant::now);
    let engine = Arc::downgrade(server.engine());
    tokio::spawn(run(engine, hub, options));
}

async fn run(engine: Weak<Engine<ClientHandler>>, hub: Arc<Hub>, options: Arc<AdminOptions>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = crate::metrics::counters([0; REFUSAL_CODES.len()]);
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        let now = crate::metrics::counters([0; REFUSAL_CODES.len()]);
        if hub.has_page() {
            // The other workers report too while a page is open here.
            super::actions::announce_page(&hub);
        }
        if hub.watched() {
            let stats = stats(&engine, &hub, &options, &last, &now);
            hub.notify("server_stats", &(stats,));
        }
        drop(engine);
        last = now;
    }
}

fn stats(
    engine: &Engine<ClientHandler>,
    hub: &Hub,
    options: &AdminOptions,
    last: &[u64],
    now: &[u64],
) -> Value {
    let polling = engine
        .sessions()
        .iter()
        .filter(|s| s.transport() == TransportKind::Polling)
        .count();
    let namespaces: Vec<Value> = hub
        .namespaces()
        .iter()
        .map(|ns| json!({ "name": ns.name(), "socketsCount": ns.socket_count() }))
        .collect();
    let uptime = STARTED.get().map_or(0.0, |t| t.elapsed().as_secs_f64());
    json!({
        "serverId": options.server_id,
        "hostname": super::hostname(),
        "pid": std::process::id(),
        "uptime": uptime,
        "clientsCount": engine.clients_count(),
        "pollingClientsCount": polling,
        "aggregatedEvents": aggregated_events(last, now, super::events::unix_millis()),
        "namespaces": namespaces,
    })
}

/// The page's aggregated events between two counter snapshots, stamped with the
/// current second (`timestamp` in ms, rounded down as the package does); types
/// with nothing new are left out.
pub fn aggregated_events(last: &[u64], now: &[u64], now_millis: u64) -> Vec<Value> {
    let timestamp = now_millis - now_millis % 1000;
    let delta = |i: usize| {
        now.get(i)
            .copied()
            .unwrap_or(0)
            .saturating_sub(last.get(i).copied().unwrap_or(0))
    };
    let mut out = Vec::new();
    let mut push = |kind: &str, sub: Option<&str>, count: u64| {
        if count > 0 {
            let mut e = json!({ "timestamp": timestamp, "type": kind, "count": count });
            if let Some(sub) = sub {
                e["subType"] = json!(sub);
            }
            out.push(e);
        }
    };
    push("rawConnection", None, delta(counter::CONNECTS));
    for (i, reason) in DISCONNECT_REASONS.iter().enumerate() {
        push(
            "rawDisconnection",
            Some(reason),
            delta(counter::DISCONNECTS + i),
        );
    }
    push("packetsIn", None, delta(counter::PACKETS_RECEIVED));
    push("packetsOut", None, delta(counter::PACKETS_SENT));
    push("bytesIn", None, delta(counter::BYTES_RECEIVED));
    push("bytesOut", None, delta(counter::BYTES_SENT));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregated_events_are_the_differences() {
        let mut last = vec![0; counter::COUNT];
        let mut now = last.clone();
        last[counter::CONNECTS] = 5;
        now[counter::CONNECTS] = 7;
        now[counter::DISCONNECTS + 2] = 1;
        now[counter::BYTES_SENT] = 300;
        let events = aggregated_events(&last, &now, 1_700_000_001_234);
        assert_eq!(
            events,
            vec![
                json!({"timestamp": 1_700_000_001_000u64, "type": "rawConnection", "count": 2}),
                json!({"timestamp": 1_700_000_001_000u64, "type": "rawDisconnection", "subType": "ping timeout", "count": 1}),
                json!({"timestamp": 1_700_000_001_000u64, "type": "bytesOut", "count": 300}),
            ]
        );
    }
}
