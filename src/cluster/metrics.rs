//! The primary's `--metrics` address: `GET /metrics` in the OpenMetrics text format
//! for the whole cluster (each family once, every worker's numbers under a
//! `worker="<i>"` label) and `GET /health`.
//!
//! Workers send their raw numbers about once a second ([`rsio_ipc::Message::Metrics`]). A
//! worker's counters restart at 0 with the worker; the primary adds what the
//! previous incarnations of that worker had counted, so every exposed counter stays
//! monotonic across restarts (`resets()` is 0, `rate()` sees no dip). The lag
//! histogram's buckets are counters too, so they get the same treatment.
//!
//! The HTTP side is [`super::metrics_http`].

use std::sync::{Arc, Mutex, MutexGuard};

use crate::metrics::{
    counter, gauge, DISCONNECT_REASONS, LAG_BUCKETS, REFUSAL_CODES, SOCKET_DISCONNECT_REASONS,
};
use http::StatusCode;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet},
    metrics::MetricType,
    registry::Registry,
};

/// What the primary knows of one worker slot.
#[derive(Debug, Default)]
struct WorkerState {
    /// The current incarnation's counters (as last reported).
    counters: Vec<u64>,
    /// What earlier incarnations counted.
    offset: Vec<u64>,
    gauges: Vec<u64>,
    namespaces: Vec<(String, u64)>,
    /// Incarnations that said hello.
    starts: u64,
    ipc_received_bytes: u64,
    ipc_sent_bytes: u64,
    ready: bool,
}

impl WorkerState {
    /// A counter as exposed: monotonic over the slot's life.
    fn counter(&self, i: usize) -> u64 {
        self.counters.get(i).copied().unwrap_or(0) + self.offset.get(i).copied().unwrap_or(0)
    }

    fn gauge(&self, i: usize) -> u64 {
        self.gauges.get(i).copied().unwrap_or(0)
    }
}

#[derive(Debug)]
struct State {
    workers: Vec<WorkerState>,
    draining: bool,
}

/// The cluster's numbers, shared between the primary's loop and its HTTP server.
/// Updated about once a second per worker, never per relayed message.
#[derive(Debug, Clone)]
pub(super) struct ClusterMetrics {
    state: Arc<Mutex<State>>,
}

impl ClusterMetrics {
    /// Numbers for `workers` slots, none ready yet.
    pub fn new(workers: usize) -> ClusterMetrics {
        let state = State {
            workers: (0..workers).map(|_| WorkerState::default()).collect(),
            draining: false,
        };
        ClusterMetrics {
            state: Arc::new(Mutex::new(state)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new incarnation of `worker` said hello: what the old one counted becomes offset.
    pub fn on_hello(&self, worker: usize) {
        let mut st = self.lock();
        let w = &mut st.workers[worker];
        let counters = std::mem::take(&mut w.counters);
        if w.offset.len() < counters.len() {
            w.offset.resize(counters.len(), 0);
        }
        for (o, c) in w.offset.iter_mut().zip(counters) {
            *o += c;
        }
        w.gauges.clear();
        w.namespaces.clear();
        w.starts += 1;
    }

    /// A worker's report, with the ipc bytes the primary counted for it since the last one.
    pub fn on_report(
        &self,
        worker: usize,
        counters: Vec<u64>,
        gauges: Vec<u64>,
        namespaces: Vec<(String, u64)>,
        ipc: (u64, u64),
    ) {
        let mut st = self.lock();
        let w = &mut st.workers[worker];
        // A counter never goes back within one incarnation: keep the larger value
        // should reports ever cross.
        if w.counters.len() < counters.len() {
            w.counters.resize(counters.len(), 0);
        }
        for (old, new) in w.counters.iter_mut().zip(counters) {
            *old = (*old).max(new);
        }
        w.gauges = gauges;
        w.namespaces = namespaces;
        w.ipc_received_bytes += ipc.0;
        w.ipc_sent_bytes += ipc.1;
    }

    /// Which workers serve and whether the cluster drains (for `/health`).
    pub fn set_status(&self, ready: impl Iterator<Item = bool>, draining: bool) {
        let mut st = self.lock();
        st.draining = draining;
        for (w, r) in st.workers.iter_mut().zip(ready) {
            w.ready = r;
            if !r {
                // A worker that is gone has no connections any more.
                w.gauges.clear();
                w.namespaces.clear();
            }
        }
    }

    /// The `/health` answer: 200 when every configured worker is ready and the
    /// cluster does not drain, 503 otherwise; the body says which.
    pub fn health(&self) -> (StatusCode, String) {
        let st = self.lock();
        let ready = st.workers.iter().filter(|w| w.ready).count();
        let configured = st.workers.len();
        if st.draining {
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        } else if ready < configured {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{ready} of {configured} workers ready\n"),
            )
        } else {
            (
                StatusCode::OK,
                format!("serving: {ready} of {configured} workers ready\n"),
            )
        }
    }

    /// The OpenMetrics text of every family.
    pub fn render(&self) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self.clone()));
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The per-worker counters of [`State::encode_traffic`] with no other label:
/// name, help, counter index.
const TRAFFIC_COUNTERS: [(&str, &str, usize); 12] = [
    (
        "rsio_packets_received",
        "Engine.IO message packets received from clients.",
        counter::PACKETS_RECEIVED,
    ),
    (
        "rsio_received_bytes",
        "Bytes of the message packets received from clients.",
        counter::BYTES_RECEIVED,
    ),
    (
        "rsio_broadcasts_received",
        "Broadcasts received from other workers.",
        counter::BROADCASTS_RECEIVED,
    ),
    (
        "rsio_packets_sent",
        "Engine.IO frames queued for clients.",
        counter::PACKETS_SENT,
    ),
    (
        "rsio_sent_bytes",
        "Bytes of the frames queued for clients.",
        counter::BYTES_SENT,
    ),
    (
        "rsio_broadcasts_sent",
        "Broadcasts emitted by the worker's server.",
        counter::BROADCASTS_SENT,
    ),
    (
        "rsio_broadcast_deliveries",
        "Packets of broadcasts written to the worker's sockets, one per socket reached.",
        counter::BROADCAST_DELIVERIES,
    ),
    (
        "rsio_broadcast_ack_timeouts",
        "Broadcasts with acknowledgements whose answers did not all come in time.",
        counter::BROADCAST_ACK_TIMEOUTS,
    ),
    (
        "rsio_volatile_drops",
        "Volatile packets dropped: the client's transport was not writable.",
        counter::VOLATILE_DROPS,
    ),
    (
        "rsio_ack_timeouts",
        "Acks of socket.timeout(..).emit_with_ack that timed out.",
        counter::ACK_TIMEOUTS,
    ),
    (
        "rsio_recovery_attempts",
        "Connections that asked to recover their session.",
        counter::RECOVERY_ATTEMPTS,
    ),
    (
        "rsio_recovery_successes",
        "Connections that got their session back.",
        counter::RECOVERY_SUCCESSES,
    ),
];

/// Labels `worker="<i>"` plus one more.
type Labels<'a> = [(&'static str, &'a str); 2];

fn counter_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (String, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (worker, v) in values {
        let labels = [("worker", worker.as_str())];
        m.encode_family(&labels)?
            .encode_counter::<NoLabelSet, _, u64>(&v, None)?;
    }
    Ok(())
}

fn gauge_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (String, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (worker, v) in values {
        let labels = [("worker", worker.as_str())];
        m.encode_family(&labels)?.encode_gauge(&v)?;
    }
    Ok(())
}

/// One family with a second label: `(worker, label value, value)` rows.
fn labelled_family(
    m: &mut MetricEncoder,
    label: &'static str,
    rows: &[(String, &str, u64)],
    counter: bool,
) -> Result<(), std::fmt::Error> {
    for (worker, value_label, v) in rows {
        let labels: Labels = [("worker", worker.as_str()), (label, value_label)];
        let mut e = m.encode_family(&labels)?;
        if counter {
            e.encode_counter::<NoLabelSet, _, u64>(v, None)?;
        } else {
            e.encode_gauge(v)?;
        }
    }
    Ok(())
}

impl Collector for ClusterMetrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = self.lock();
        st.encode_clients(&mut enc)?;
        st.encode_traffic(&mut enc)?;
        st.encode_workers(&mut enc)
    }
}

impl State {
    /// Each worker with its `worker` label.
    fn labelled(&self) -> impl Iterator<Item = (String, &WorkerState)> {
        self.workers
            .iter()
            .enumerate()
            .map(|(i, w)| (i.to_string(), w))
    }

    /// Connections, sockets, connects and disconnects.
    fn encode_clients(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let workers = || self.labelled();
        let count = |i: usize| workers().map(move |(n, w)| (n, w.counter(i)));
        let mut rows = Vec::new();
        for (n, w) in workers() {
            rows.push((n.clone(), "polling", w.gauge(gauge::POLLING)));
            rows.push((n, "websocket", w.gauge(gauge::WEBSOCKET)));
        }
        let mut m = enc.encode_descriptor(
            "rsio_connections",
            "Open Engine.IO connections by transport.",
            None,
            MetricType::Gauge,
        )?;
        labelled_family(&mut m, "transport", &rows, false)?;

        let mut m = enc.encode_descriptor(
            "rsio_sockets",
            "Connected Socket.IO sockets by namespace.",
            None,
            MetricType::Gauge,
        )?;
        for (n, w) in workers() {
            for (nsp, v) in &w.namespaces {
                let labels: Labels = [("worker", n.as_str()), ("namespace", nsp.as_str())];
                m.encode_family(&labels)?.encode_gauge(v)?;
            }
        }

        counter_family(
            enc,
            "rsio_connects",
            "Engine.IO sessions opened.",
            count(counter::CONNECTS),
        )?;
        let mut rows = Vec::new();
        for (n, w) in workers() {
            for (i, reason) in DISCONNECT_REASONS.iter().enumerate() {
                rows.push((n.clone(), *reason, w.counter(counter::DISCONNECTS + i)));
            }
        }
        let mut m = enc.encode_descriptor(
            "rsio_disconnects",
            "Engine.IO sessions closed, by reason.",
            None,
            MetricType::Counter,
        )?;
        labelled_family(&mut m, "reason", &rows, true)?;

        let mut rows = Vec::new();
        for (n, w) in workers() {
            for (i, reason) in SOCKET_DISCONNECT_REASONS.iter().enumerate() {
                rows.push((
                    n.clone(),
                    *reason,
                    w.counter(counter::SOCKET_DISCONNECTS + i),
                ));
            }
        }
        let mut m = enc.encode_descriptor(
            "rsio_socket_disconnects",
            "Socket.IO sockets that left their namespace, by reason (Node's reason strings).",
            None,
            MetricType::Counter,
        )?;
        labelled_family(&mut m, "reason", &rows, true)?;
        Ok(())
    }

    /// Packets, bytes, broadcasts, drops, acks, recovery and refusals.
    fn encode_traffic(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let workers = || self.labelled();
        for (name, help, i) in TRAFFIC_COUNTERS {
            counter_family(enc, name, help, workers().map(|(n, w)| (n, w.counter(i))))?;
        }
        let mut rows = Vec::new();
        for (n, w) in workers() {
            let origin = w.counter(counter::ORIGIN_REFUSALS);
            for (i, code) in REFUSAL_CODES.iter().enumerate() {
                let mut v = w.counter(counter::REFUSALS + i);
                if *code == "forbidden" {
                    // Foreign origins have their own reason: count each refusal once.
                    v = v.saturating_sub(origin);
                }
                rows.push((n.clone(), *code, v));
            }
            rows.push((n.clone(), "origin", origin));
            rows.push((n, "connection_cap", w.counter(counter::CAP_REFUSALS)));
        }
        let mut m = enc.encode_descriptor(
            "rsio_refusals",
            "Requests refused: foreign origin, connection cap, or the Engine.IO error code.",
            None,
            MetricType::Counter,
        )?;
        labelled_family(&mut m, "reason", &rows, true)?;
        Ok(())
    }

    /// The workers themselves: acks pending, ipc, restarts, readiness and event-loop lag.
    fn encode_workers(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let workers = || self.labelled();
        let gauge = |i: usize| workers().map(move |(n, w)| (n, w.gauge(i)));
        gauge_family(
            enc,
            "rsio_acks_pending",
            "Acknowledgements the server waits for.",
            gauge(gauge::ACKS_PENDING),
        )?;
        gauge_family(
            enc,
            "rsio_ipc_backlog_bytes",
            "Bytes queued on the worker's ipc socket to the primary.",
            gauge(gauge::IPC_BACKLOG_BYTES),
        )?;
        counter_family(
            enc,
            "rsio_ipc_received_bytes",
            "Bytes the primary received from the worker over ipc.",
            workers().map(|(n, w)| (n, w.ipc_received_bytes)),
        )?;
        counter_family(
            enc,
            "rsio_ipc_sent_bytes",
            "Bytes the primary sent to the worker over ipc.",
            workers().map(|(n, w)| (n, w.ipc_sent_bytes)),
        )?;
        counter_family(
            enc,
            "rsio_worker_restarts",
            "Times the worker was started again after the first start.",
            workers().map(|(n, w)| (n, w.starts.saturating_sub(1))),
        )?;
        gauge_family(
            enc,
            "rsio_worker_ready",
            "Whether the worker serves (1) or not (0).",
            workers().map(|(n, w)| (n, u64::from(w.ready))),
        )?;

        let mut m = enc.encode_descriptor(
            "rsio_event_loop_lag_seconds",
            "How late the worker's 100 ms timer fires.",
            None,
            MetricType::Histogram,
        )?;
        for (n, w) in workers() {
            // The encoder sums the buckets: hand it per-bucket counts.
            let mut buckets = Vec::with_capacity(LAG_BUCKETS.len() + 1);
            let mut below = 0;
            let bounds = LAG_BUCKETS.iter().copied().chain([f64::INFINITY]);
            for (i, bound) in bounds.enumerate() {
                let cumulative = w.counter(counter::LAG_BUCKET + i);
                buckets.push((bound, cumulative.saturating_sub(below)));
                below = below.max(cumulative);
            }
            let total = w.counter(counter::LAG_BUCKET + LAG_BUCKETS.len());
            let sum = w.counter(counter::LAG_SUM_MICROS) as f64 / 1e6;
            let labels = [("worker", n.as_str())];
            m.encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(sum, total, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(m: &ClusterMetrics, worker: usize, packets: u64) {
        let mut counters = vec![0; counter::COUNT];
        counters[counter::PACKETS_RECEIVED] = packets;
        m.on_report(
            worker,
            counters,
            vec![3, 4, 0, 0],
            vec![("/".into(), 7)],
            (10, 20),
        );
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
    }

    #[test]
    fn counters_stay_monotonic_across_a_restart() {
        let m = ClusterMetrics::new(2);
        m.on_hello(1);
        report(&m, 1, 40);
        // The worker dies and its next incarnation starts counting at 0.
        m.on_hello(1);
        report(&m, 1, 5);
        let text = m.render();
        assert_eq!(
            line(&text, "rsio_packets_received_total{worker=\"1\"}"),
            "rsio_packets_received_total{worker=\"1\"} 45"
        );
        assert_eq!(
            line(&text, "rsio_worker_restarts_total{worker=\"1\"}"),
            "rsio_worker_restarts_total{worker=\"1\"} 1"
        );
        assert_eq!(
            line(
                &text,
                "rsio_connections{worker=\"1\",transport=\"websocket\"}"
            ),
            "rsio_connections{worker=\"1\",transport=\"websocket\"} 4"
        );
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn health_needs_every_worker_and_no_drain() {
        let m = ClusterMetrics::new(2);
        assert_eq!(m.health().0, StatusCode::SERVICE_UNAVAILABLE);
        m.set_status([true, true].into_iter(), false);
        assert_eq!(m.health().0, StatusCode::OK);
        m.set_status([true, false].into_iter(), false);
        assert_eq!(m.health().1, "1 of 2 workers ready\n");
        m.set_status([true, true].into_iter(), true);
        assert_eq!(
            m.health(),
            (StatusCode::SERVICE_UNAVAILABLE, "draining\n".into())
        );
    }
}
