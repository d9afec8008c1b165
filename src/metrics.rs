//! A worker's raw metric values: plain process-wide atomic counters bumped on the
//! message path (one Relaxed add each: a worker is one thread, so they are never
//! contended), and a snapshot of them plus a few gauges read once a second and
//! sent to the primary ([`rsio_ipc::Message::Metrics`]), which exposes them
//! (`cluster::metrics`). The layout of the snapshot is fixed by the indices below;
//! both ends are this crate, and the ipc protocol version covers changes.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use rsio_ipc::{IpcSender, Message};
use tokio::time::MissedTickBehavior;

use crate::{
    engine::{CloseReason, TransportKind},
    server::{DisconnectReason, Server},
};

/// Upper bounds (seconds) of the event-loop lag histogram's buckets; `+Inf` follows.
pub const LAG_BUCKETS: [f64; 7] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0];

/// Indices of the monotonic counters in a snapshot.
pub mod counter {
    /// Engine.IO message packets received from clients.
    pub const PACKETS_RECEIVED: usize = 0;
    /// Bytes of those packets.
    pub const BYTES_RECEIVED: usize = 1;
    /// Engine.IO sessions opened.
    pub const CONNECTS: usize = 2;
    /// Engine.IO sessions closed, one per close reason (see [`super::DISCONNECT_REASONS`]).
    pub const DISCONNECTS: usize = 3;
    /// Broadcasts received from other workers over ipc.
    pub const BROADCASTS_RECEIVED: usize = DISCONNECTS + super::DISCONNECT_REASONS.len();
    /// Requests refused, one per Engine.IO error code (see [`super::REFUSAL_CODES`]).
    pub const REFUSALS: usize = BROADCASTS_RECEIVED + 1;
    /// Event-loop lag histogram: cumulative bucket counts ([`super::LAG_BUCKETS`], then `+Inf`).
    pub const LAG_BUCKET: usize = REFUSALS + super::REFUSAL_CODES.len();
    /// Event-loop lag histogram: sum of the samples in microseconds.
    pub const LAG_SUM_MICROS: usize = LAG_BUCKET + super::LAG_BUCKETS.len() + 1;
    /// Engine.IO frames queued for clients.
    pub const PACKETS_SENT: usize = LAG_SUM_MICROS + 1;
    /// Bytes of those frames.
    pub const BYTES_SENT: usize = PACKETS_SENT + 1;
    /// Volatile packets dropped because the client's transport was not writable.
    pub const VOLATILE_DROPS: usize = BYTES_SENT + 1;
    /// Broadcasts emitted by this worker's server.
    pub const BROADCASTS_SENT: usize = VOLATILE_DROPS + 1;
    /// Connections that asked to recover a session.
    pub const RECOVERY_ATTEMPTS: usize = BROADCASTS_SENT + 1;
    /// Of those, the ones that got their session back.
    pub const RECOVERY_SUCCESSES: usize = RECOVERY_ATTEMPTS + 1;
    /// Requests refused for a foreign origin (also counted under code `forbidden`).
    pub const ORIGIN_REFUSALS: usize = RECOVERY_SUCCESSES + 1;
    /// Connections refused because the worker serves `--max-connections` already.
    pub const CAP_REFUSALS: usize = ORIGIN_REFUSALS + 1;
    /// Acks that timed out.
    pub const ACK_TIMEOUTS: usize = CAP_REFUSALS + 1;
    /// Packets of broadcasts written to this worker's sockets (one per socket reached).
    pub const BROADCAST_DELIVERIES: usize = ACK_TIMEOUTS + 1;
    /// Broadcasts with acknowledgements whose answers did not all come in time.
    pub const BROADCAST_ACK_TIMEOUTS: usize = BROADCAST_DELIVERIES + 1;
    /// Socket.IO sockets that left their namespace, one per reason (see
    /// [`super::SOCKET_DISCONNECT_REASONS`]).
    pub const SOCKET_DISCONNECTS: usize = BROADCAST_ACK_TIMEOUTS + 1;
    /// How many counters a snapshot has.
    pub const COUNT: usize = SOCKET_DISCONNECTS + super::SOCKET_DISCONNECT_REASONS.len();
}

/// Indices of the gauges in a snapshot.
pub mod gauge {
    /// Engine.IO connections on the polling transport.
    pub const POLLING: usize = 0;
    /// Engine.IO connections on the WebSocket transport.
    pub const WEBSOCKET: usize = 1;
    /// Acks the server waits for.
    pub const ACKS_PENDING: usize = 2;
    /// Bytes queued on the ipc socket to the primary.
    pub const IPC_BACKLOG_BYTES: usize = 3;
    /// How many gauges a snapshot has.
    pub const COUNT: usize = 4;
}

/// The `reason` label of each disconnect counter, in index order.
pub const DISCONNECT_REASONS: [&str; 6] = [
    "transport close",
    "transport error",
    "ping timeout",
    "parse error",
    "forced close",
    "send queue full",
];

/// The `reason` label of each Socket.IO disconnect counter (Node's reason strings,
/// and rsio's own two), in index order.
pub const SOCKET_DISCONNECT_REASONS: [&str; 11] = [
    "server namespace disconnect",
    "client namespace disconnect",
    "server shutting down",
    "ping timeout",
    "transport close",
    "transport error",
    "parse error",
    "forced close",
    "forced server close",
    "send queue full",
    "handler panic",
];

/// The `code` label of each refusal counter (Node's Engine.IO error codes), in index order.
pub const REFUSAL_CODES: [&str; 6] = [
    "unknown_transport",
    "unknown_sid",
    "bad_handshake_method",
    "bad_request",
    "forbidden",
    "unsupported_protocol_version",
];

#[allow(clippy::declare_interior_mutable_const)]
const ZERO: AtomicU64 = AtomicU64::new(0);
/// The counters bumped on the message path (refusals and lag are filled in at snapshot time).
static COUNTERS: [AtomicU64; counter::COUNT] = [ZERO; counter::COUNT];

/// Adds `n` to counter `index`.
#[inline]
pub fn add(index: usize, n: u64) {
    COUNTERS[index].fetch_add(n, Ordering::Relaxed);
}

/// Counts one received message packet of `len` bytes.
#[inline]
pub fn packet_received(len: usize) {
    add(counter::PACKETS_RECEIVED, 1);
    add(counter::BYTES_RECEIVED, len as u64);
}

/// Counts one closed session.
pub fn disconnected(reason: CloseReason) {
    let i = match reason {
        CloseReason::TransportClose => 0,
        CloseReason::TransportError => 1,
        CloseReason::PingTimeout => 2,
        CloseReason::ParseError => 3,
        CloseReason::ForcedClose => 4,
        CloseReason::SendQueueFull => 5,
    };
    add(counter::DISCONNECTS + i, 1);
}

/// Counts one socket that left its namespace.
#[inline]
pub fn socket_disconnected(reason: DisconnectReason) {
    let i = match reason {
        DisconnectReason::ServerNamespaceDisconnect => 0,
        DisconnectReason::ClientNamespaceDisconnect => 1,
        DisconnectReason::ServerShuttingDown => 2,
        DisconnectReason::PingTimeout => 3,
        DisconnectReason::TransportClose => 4,
        DisconnectReason::TransportError => 5,
        DisconnectReason::ParseError => 6,
        DisconnectReason::ForcedClose => 7,
        DisconnectReason::ForcedServerClose => 8,
        DisconnectReason::SendQueueFull => 9,
        DisconnectReason::HandlerPanic => 10,
    };
    add(counter::SOCKET_DISCONNECTS + i, 1);
}

/// Records one event-loop lag sample.
pub fn lag(seconds: f64) {
    for (i, bound) in LAG_BUCKETS.iter().enumerate() {
        if seconds <= *bound {
            add(counter::LAG_BUCKET + i, 1);
        }
    }
    add(counter::LAG_BUCKET + LAG_BUCKETS.len(), 1);
    add(counter::LAG_SUM_MICROS, (seconds * 1e6) as u64);
}

/// The current counters; `refusals` (per code, from the engines) are added in.
pub fn counters(refusals: [u64; REFUSAL_CODES.len()]) -> Vec<u64> {
    let mut out: Vec<u64> = COUNTERS.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    for (i, n) in refusals.iter().enumerate() {
        out[counter::REFUSALS + i] += n;
    }
    out
}

/// How often a worker measures its event-loop lag.
const LAG_EVERY: Duration = Duration::from_millis(100);
/// How often a worker sends its numbers to the primary.
const REPORT_EVERY: Duration = Duration::from_secs(1);

/// Measures this thread's event-loop lag: how late a 100 ms timer fires.
pub(crate) async fn measure_lag() {
    let mut tick = tokio::time::interval(LAG_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tick.tick().await;
    let mut last = Instant::now();
    loop {
        tick.tick().await;
        let now = Instant::now();
        lag(now
            .duration_since(last)
            .saturating_sub(LAG_EVERY)
            .as_secs_f64());
        last = now;
    }
}

/// Sends the worker's numbers to the primary every second until the ipc connection fails.
pub(crate) async fn report(servers: Arc<Mutex<Vec<Server>>>, sender: IpcSender) {
    let mut tick = tokio::time::interval(REPORT_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // Cloned out: the lock is not held while the sessions are counted.
        let servers = servers.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut refusals = [0; REFUSAL_CODES.len()];
        let mut gauges = vec![0; gauge::COUNT];
        let mut namespaces = Vec::new();
        for server in &servers {
            let engine = server.engine();
            for (total, n) in refusals.iter_mut().zip(engine.connection_errors()) {
                *total += n;
            }
            for session in engine.sessions() {
                match session.transport() {
                    TransportKind::Polling => gauges[gauge::POLLING] += 1,
                    TransportKind::WebSocket => gauges[gauge::WEBSOCKET] += 1,
                }
            }
            gauges[gauge::ACKS_PENDING] += server.pending_acks() as u64;
            namespaces.extend(server.socket_counts());
        }
        gauges[gauge::IPC_BACKLOG_BYTES] = sender.queued_bytes() as u64;
        let message = Message::Metrics {
            counters: counters(refusals),
            gauges,
            namespaces,
        };
        if sender.send(message).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_buckets_are_cumulative() {
        let before = counters([0; 6]);
        lag(0.003);
        let after = counters([0; 6]);
        let d = |i: usize| after[i] - before[i];
        assert_eq!(d(counter::LAG_BUCKET), 0, "le 0.001");
        assert_eq!(d(counter::LAG_BUCKET + 1), 1, "le 0.005");
        assert_eq!(d(counter::LAG_BUCKET + LAG_BUCKETS.len()), 1, "+Inf");
        assert!(d(counter::LAG_SUM_MICROS) >= 2999);
    }

    #[test]
    fn socket_disconnect_labels_are_the_reason_strings() {
        use DisconnectReason::*;
        let all = [
            ServerNamespaceDisconnect,
            ClientNamespaceDisconnect,
            ServerShuttingDown,
            PingTimeout,
            TransportClose,
            TransportError,
            ParseError,
            ForcedClose,
            ForcedServerClose,
            SendQueueFull,
            HandlerPanic,
        ];
        assert_eq!(all.len(), SOCKET_DISCONNECT_REASONS.len());
        for reason in all {
            let before = counters([0; 6]);
            socket_disconnected(reason);
            let after = counters([0; 6]);
            let i = SOCKET_DISCONNECT_REASONS
                .iter()
                .position(|r| *r == reason.as_str())
                .unwrap();
            // Other tests of this process may count too: at least ours.
            assert!(
                after[counter::SOCKET_DISCONNECTS + i] > before[counter::SOCKET_DISCONNECTS + i]
            );
        }
    }
}
