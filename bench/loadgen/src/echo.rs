//! `echo`: W emits with acks in flight per client; acks per second and latency.

use std::{
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Result};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::sleep_until;

use crate::{
    client::Ws,
    clock::{at_us, now_us, start},
    frame::{self, Frame},
    procfs::sample,
    report::{latency, per_op_us, sys_fraction},
    run::{handle_ready, progress, setup, spread, Handled, Run, Setup, Shared},
    Cli,
};

/// `echo`: W emits in flight, a new one for each ack, until the window ends.
async fn echo_client(shared: Rc<Shared>, mut s: Setup, port: u16) {
    let Some(mut ws) = setup(&shared, &mut s, port, None).await else {
        return;
    };
    if let Err(e) = echo_loop(&shared, &mut ws).await {
        shared.error(e);
    }
}

async fn echo_loop(shared: &Shared, ws: &mut Ws) -> Result<()> {
    let (w_start, w_end) = shared.window.get();
    let size = shared.cli.payload;
    let mut next_id = 0u64;
    for _ in 0..shared.cli.in_flight.max(1) {
        ws.feed(crate::msgpack::message(frame::echo(
            next_id,
            now_us(),
            size,
        )))
        .await?;
        next_id += 1;
    }
    ws.flush().await?;
    let end = sleep_until((start() + Duration::from_micros(w_end)).into());
    tokio::pin!(end);
    loop {
        let first = tokio::select! {
            biased;
            _ = &mut end => return Ok(()),
            m = ws.next() => m,
        };
        handle_ready(shared, ws, first, |f, text| match f {
            Frame::Ack { args, .. } => {
                let now = now_us();
                let ts = frame::leading_timestamp(args)
                    .ok_or_else(|| anyhow!("ack without a timestamp: {text}"))?;
                if now >= w_start && now <= w_end {
                    shared.ops.set(shared.ops.get() + 1);
                    shared.record(now.saturating_sub(ts));
                }
                if now >= w_end {
                    return Ok(Handled::Done);
                }
                let id = next_id;
                next_id += 1;
                Ok(Handled::Reply(crate::msgpack::message(frame::echo(
                    id, now, size,
                ))))
            }
            _ => Ok(Handled::Unexpected),
        })
        .await?;
    }
}

pub async fn run_echo(cli: &Cli) -> Result<Value> {
    let mut run = Run::new(cli);
    for i in 0..cli.clients {
        let port = spread(&cli.ports, i);
        let task = echo_client(run.shared.clone(), run.setup(), port);
        run.tasks.push(tokio::task::spawn_local(task));
    }
    let ok = run.wait_ready(cli.clients, "echo").await;
    if ok == 0 {
        bail!(
            "no client connected: {}",
            run.shared.first_error.borrow().clone().unwrap_or_default()
        );
    }
    let go = Instant::now() + Duration::from_millis(50);
    let w_start = go + Duration::from_secs_f64(cli.warmup);
    let w_end = w_start + Duration::from_secs_f64(cli.duration);
    run.shared.window.set((at_us(w_start), at_us(w_end)));
    let _ = run.go_tx.send(true);
    let prog = progress(run.shared.clone(), "acks");
    sleep_until(w_start.into()).await;
    let a = sample(&cli.pids);
    sleep_until(w_end.into()).await;
    let b = sample(&cli.pids);
    prog.abort();
    let shared = run.shared.clone();
    run.finish().await;
    let ops = shared.ops.get();
    let hist = shared.hist.borrow();
    Ok(json!({
        "connections": ok,
        "in_flight": cli.in_flight,
        "payload": cli.payload,
        "seconds": cli.duration,
        "ops": ops,
        "ops_per_s": ops as f64 / cli.duration,
        "latency_us": latency(&hist),
        "server_cpu_us_per_op": per_op_us(b.cpu_s - a.cpu_s, ops),
        "server_sys_fraction": sys_fraction(&a, &b),
        "server_cpu_share": (b.cpu_s - a.cpu_s) / cli.duration,
        "loadgen_cpu_us_per_op": per_op_us(b.self_cpu_s - a.self_cpu_s, ops),
        "loadgen_cpu_share": (b.self_cpu_s - a.self_cpu_s) / cli.duration,
        "server_rss": b.rss,
        "server_processes": b.processes,
        "unexpected": shared.unexpected.get(),
        "errors": shared.errors.get(),
        "compressed_in": crate::deflate::inflated(),
    }))
}
