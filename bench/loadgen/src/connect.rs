//! `connect`: connections per second, then RSS per idle connection.

use std::{
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde_json::{json, Value};
use tokio::time::sleep;

use crate::{
    client::{idle, wait_signal},
    procfs::sample,
    report::{per_op_us, sys_fraction},
    run::{setup, spread, Run, Setup, Shared},
    Cli,
};

/// `connect`: holds the connection idle until `stop`.
async fn connect_client(shared: Rc<Shared>, mut s: Setup, port: u16) {
    let Some(mut ws) = setup(&shared, &mut s, port, None).await else {
        return;
    };
    let mut stop = s.stop.clone();
    if let Err(e) = idle(&mut ws, wait_signal(&mut stop)).await {
        shared.error(e);
    }
}

pub async fn run_connect(cli: &Cli) -> Result<Value> {
    let mut run = Run::new(cli);
    let before = sample(&cli.pids);
    let t0 = Instant::now();
    for i in 0..cli.clients {
        let port = spread(&cli.ports, i);
        let task = connect_client(run.shared.clone(), run.setup(), port);
        run.tasks.push(tokio::task::spawn_local(task));
    }
    let ok = run.wait_ready(cli.clients, "connect").await;
    let elapsed = t0.elapsed().as_secs_f64();
    let connected = sample(&cli.pids);
    sleep(Duration::from_secs_f64(cli.settle)).await;
    let idle = sample(&cli.pids);
    let shared = run.shared.clone();
    run.finish().await;
    let rss_growth = idle.rss.saturating_sub(before.rss);
    Ok(json!({
        "connections": ok,
        "seconds": elapsed,
        "ops": ok,
        "ops_per_s": ok as f64 / elapsed,
        "server_cpu_us_per_op": per_op_us(connected.cpu_s - before.cpu_s, ok as u64),
        "server_sys_fraction": sys_fraction(&before, &connected),
        "loadgen_cpu_us_per_op": per_op_us(connected.self_cpu_s - before.self_cpu_s, ok as u64),
        "server_rss_before": before.rss,
        "server_rss_idle": idle.rss,
        "server_processes": idle.processes,
        "rss_per_conn": if ok > 0 { json!(rss_growth / ok as u64) } else { Value::Null },
        "errors": shared.errors.get(),
    }))
}
