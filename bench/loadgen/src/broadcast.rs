//! `broadcast`, `cross-worker` and `cross-host`: every client in one room, S senders;
//! deliveries per second, fan-out latency, lost deliveries.

use std::{
    cell::Cell,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::{
    sync::watch,
    time::{sleep, sleep_until},
};

use crate::{
    client::{wait_signal, Ws},
    clock::{at_us, now_us, start},
    frame::{self, Frame},
    procfs::sample,
    redis_stats,
    report::{latency, per_op_us, sys_fraction},
    run::{handle_ready, progress, setup, spread, Handled, Run, Setup, Shared},
    Cli, Hop, Scenario,
};

/// `broadcast`/`cross-worker`: every client counts `bcast` deliveries; a
/// sender also emits `count` broadcasts, one per `period`, from `first`.
async fn broadcast_loop(
    shared: &Shared,
    ws: &mut Ws,
    send: Option<(Instant, Duration, u64)>,
    stop: &mut watch::Receiver<bool>,
) -> Result<()> {
    let (first, period, count) = send.unwrap_or((Instant::now(), Duration::from_secs(3600), 0));
    let mut ticks = tokio::time::interval_at(first.into(), period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut sent = 0u64;
    let stopped = wait_signal(stop);
    tokio::pin!(stopped);
    let size = shared.cli.payload;
    loop {
        tokio::select! {
            biased;
            _ = &mut stopped => return Ok(()),
            _ = ticks.tick(), if sent < count => {
                ws.send(crate::msgpack::message(frame::broadcast(&shared.cli.room, now_us(), size))).await?;
                sent += 1;
                shared.sent.set(shared.sent.get() + 1);
            }
            m = ws.next() => {
                handle_ready(shared, ws, m, |f, text| match f {
                    Frame::Event { name: "bcast", rest } => {
                        let now = now_us();
                        let ts = frame::leading_timestamp(rest)
                            .ok_or_else(|| anyhow!("bcast without a timestamp: {text}"))?;
                        shared.ops.set(shared.ops.get() + 1);
                        shared.last_delivery_us.set(now);
                        shared.record(now.saturating_sub(ts));
                        Ok(Handled::Done)
                    }
                    _ => Ok(Handled::Unexpected),
                })
                .await?;
            }
        }
    }
}

pub async fn run_broadcast(cli: &Cli) -> Result<Value> {
    let cross = cli.scenario == Scenario::CrossWorker;
    if cross && cli.ports.len() < 2 {
        bail!("cross-worker needs at least two ports");
    }
    let hosts = cli.scenario == Scenario::CrossHost;
    if hosts && cli.hop == Hop::CrossHost && cli.far_ports.is_empty() {
        bail!("cross-host --hop cross-host needs --far-ports");
    }
    let senders = cli.senders.max(1);
    // Who connects where, and who sends.
    let mut plan: Vec<(u16, bool)> = Vec::new();
    if cross || hosts {
        let receivers = match (hosts, cli.hop) {
            (false, _) => &cli.ports[1..],
            (true, Hop::SameHost) => &cli.ports[..],
            (true, Hop::CrossHost) => &cli.far_ports[..],
        };
        plan.extend((0..senders).map(|_| (cli.ports[0], true)));
        plan.extend((0..cli.clients).map(|i| (spread(receivers, i), false)));
    } else {
        plan.extend((0..cli.clients).map(|i| (spread(&cli.ports, i), i < senders)));
    }
    let per_sender_rate = cli.rate / senders as f64;
    let period = Duration::from_secs_f64(1.0 / per_sender_rate);
    let count = (per_sender_rate * cli.duration).round().max(1.0) as u64;
    // Senders start once everyone has joined: `go` is set a little later
    // than this schedule's origin, which is fixed now and moved below.
    let origin = Rc::new(Cell::new(None::<Instant>));
    let mut run = Run::new(cli);
    let mut sender_index = 0;
    for (port, is_sender) in &plan {
        let shared = run.shared.clone();
        let setup = run.setup();
        let port = *port;
        let send = is_sender.then(|| {
            sender_index += 1;
            sender_index - 1
        });
        let origin = origin.clone();
        run.tasks.push(tokio::task::spawn_local(async move {
            // The schedule is known once `go` is given; read it lazily.
            let s = setup;
            let shared2 = shared.clone();
            let send_plan = move || {
                send.map(|k| {
                    let first = origin.get().unwrap_or_else(Instant::now)
                        + period.mul_f64(k as f64 / senders as f64);
                    (first, period, count)
                })
            };
            broadcast_client_lazy(shared2, s, port, send_plan).await;
        }));
    }
    let ok = run.wait_ready(plan.len(), "broadcast").await;
    let members = ok as u64;
    if ok == 0 {
        bail!(
            "no client joined: {}",
            run.shared.first_error.borrow().clone().unwrap_or_default()
        );
    }
    // Let the joins settle, then go.
    sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now() + Duration::from_millis(50);
    origin.set(Some(t0));
    let _ = run.go_tx.send(true);
    let prog = progress(run.shared.clone(), "deliveries");
    sleep_until(t0.into()).await;
    let redis_before = match &cli.redis {
        Some(addr) => Some(redis_stats::commandstats(addr).await?),
        None => None,
    };
    let redis_pid: Vec<u32> = cli.redis_pid.into_iter().collect();
    let ra = sample(&redis_pid);
    let a = sample(&cli.pids);
    let shared = run.shared.clone();
    let expected_sends = plan.iter().filter(|(_, s)| *s).count() as u64 * count;
    let send_end = t0 + Duration::from_secs_f64(cli.duration);
    let give_up = send_end + Duration::from_secs_f64(cli.drain);
    loop {
        let expected = shared.sent.get() * members;
        let done = shared.sent.get() >= expected_sends && shared.ops.get() >= expected;
        if done || Instant::now() >= give_up {
            break;
        }
        sleep(Duration::from_millis(5)).await;
    }
    let b = sample(&cli.pids);
    let rb = sample(&redis_pid);
    let redis_after = match &cli.redis {
        Some(addr) => Some(redis_stats::commandstats(addr).await?),
        None => None,
    };
    prog.abort();
    let end = if shared.last_delivery_us.get() > at_us(t0) {
        start() + Duration::from_micros(shared.last_delivery_us.get())
    } else {
        Instant::now()
    };
    let seconds = end.saturating_duration_since(t0).as_secs_f64().max(1e-6);
    run.finish().await;
    let delivered = shared.ops.get();
    let sent = shared.sent.get();
    let hist = shared.hist.borrow();
    let mut out = json!({
        "connections": ok,
        "senders": senders,
        "rate": cli.rate,
        "payload": cli.payload,
        "sent": sent,
        "expected": sent * members,
        "delivered": delivered,
        "lost": (sent * members).saturating_sub(delivered),
        "seconds": seconds,
        "ops": delivered,
        "ops_per_s": delivered as f64 / seconds,
        "latency_us": latency(&hist),
        "server_cpu_us_per_op": per_op_us(b.cpu_s - a.cpu_s, delivered),
        "server_sys_fraction": sys_fraction(&a, &b),
        "server_cpu_share": (b.cpu_s - a.cpu_s) / seconds,
        "loadgen_cpu_us_per_op": per_op_us(b.self_cpu_s - a.self_cpu_s, delivered),
        "server_rss": b.rss,
        "server_processes": b.processes,
        "unexpected": shared.unexpected.get(),
        "errors": shared.errors.get(),
        "compressed_in": crate::deflate::inflated(),
    });
    if hosts {
        let fields = out.as_object_mut().expect("an object");
        let hop = match cli.hop {
            Hop::SameHost => "same-host",
            Hop::CrossHost => "cross-host",
        };
        // `placement` keys the point in rsio-benchplot, with `workers` per host.
        fields.insert("placement".into(), json!(hop));
        fields.insert("workers".into(), json!(cli.ports.len()));
        if let (Some(before), Some(after)) = (&redis_before, &redis_after) {
            if let Value::Object(m) = redis_stats::delta(before, after, sent) {
                fields.extend(m);
            }
        }
        if cli.redis_pid.is_some() {
            // From schedstat: Redis uses a few % of a core, below the 10 ms ticks.
            let redis_s = rb.cpu_ns.saturating_sub(ra.cpu_ns) as f64 / 1e9;
            fields.insert("redis_cpu_us_per_op".into(), per_op_us(redis_s, delivered));
        }
    }
    Ok(out)
}

async fn broadcast_client_lazy(
    shared: Rc<Shared>,
    mut s: Setup,
    port: u16,
    send_plan: impl FnOnce() -> Option<(Instant, Duration, u64)>,
) {
    let Some(mut ws) = setup(&shared, &mut s, port, Some(&shared.cli.room)).await else {
        return;
    };
    let mut stop = s.stop.clone();
    let send = send_plan();
    if let Err(e) = broadcast_loop(&shared, &mut ws, send, &mut stop).await {
        shared.error(e);
    }
}
