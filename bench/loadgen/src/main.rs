//! `rsio-loadgen`: the load generator of the rsio benchmark (`scripts/bench`,
//! `shared/bench-contract.md`). It speaks raw Engine.IO v4 / Socket.IO v5
//! text frames over WebSocket (tokio-tungstenite), one task per connection on
//! one current-thread runtime, and prints one JSON line of results on stdout
//! (progress goes to stderr).
//!
//! Scenarios:
//! - `connect`: C clients connect at a bounded concurrency (connections/s),
//!   then stay idle while the server's RSS is read (RSS per idle connection).
//! - `echo`: C clients, W `echo` emits with acks in flight each, for D seconds
//!   after a warm-up (acks/s, latency p50/p99/max).
//! - `broadcast`: C clients spread over `--ports`, all in room `r`; S of them
//!   emit `broadcast` at R per second in total (deliveries/s, delivered vs
//!   expected, fan-out latency from a send timestamp in the payload).
//! - `cross-worker`: S extra senders on the first port, the C receivers on the
//!   other ports.
//!
//! With `--pids`, the CPU time (utime + stime) and RSS of those processes and
//! all their descendants are read from /proc around the measured window, so
//! the figures include the server's CPU per operation; the load generator's
//! own CPU per operation comes from /proc/self/stat.

mod frame;

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use clap::{Parser, ValueEnum};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch, Semaphore},
    time::{sleep, sleep_until},
};
use tokio_tungstenite::{
    client_async_with_config,
    tungstenite::{protocol::WebSocketConfig, Message},
    WebSocketStream,
};

use frame::Frame;

type Ws = WebSocketStream<TcpStream>;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Connect,
    Echo,
    Broadcast,
    CrossWorker,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Socket.IO load generator for the rsio benchmark")]
struct Cli {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Server ports (comma separated); clients are spread over them.
    #[arg(long, value_delimiter = ',', default_value = "3000")]
    ports: Vec<u16>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Clients (C); in `cross-worker`, the receivers.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Connection attempts in progress at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// `echo`: emits in flight per client (W).
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Payload size in bytes (a string that starts with a 16-digit timestamp).
    #[arg(long, default_value_t = 32)]
    payload: usize,
    /// Measured seconds (`echo`), or seconds of sending (`broadcast`).
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// `echo`: seconds of load before the measured window.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// `broadcast`/`cross-worker`: senders (S).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// `broadcast`/`cross-worker`: broadcasts per second, all senders together (R).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    #[arg(long, default_value = "r")]
    room: String,
    /// `connect`: idle seconds before the server's RSS is read.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// `broadcast`: seconds to wait for the last deliveries after sending ends.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Server processes to sample (their descendants are included).
    #[arg(long, value_delimiter = ',')]
    pids: Vec<u32>,
    /// Hard limit on the whole run, in seconds.
    #[arg(long, default_value_t = 120.0)]
    max_time: f64,
    /// Copied into the result as `server`.
    #[arg(long, default_value = "")]
    label: String,
    /// Copied into the result as `rep`.
    #[arg(long, default_value_t = 0)]
    rep: u32,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

static START: OnceLock<Instant> = OnceLock::new();

fn start() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Microseconds since the load generator started (the timestamps in payloads).
fn now_us() -> u64 {
    start().elapsed().as_micros() as u64
}

fn at_us(t: Instant) -> u64 {
    t.saturating_duration_since(start()).as_micros() as u64
}

// ---------------------------------------------------------------- /proc

/// `/proc` accounts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_S: f64 = 100.0;

/// (utime, stime) of a process, in ticks.
fn proc_cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): state is the
    // first, utime the 12th and stime the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime, stime))
}

fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn with_descendants(roots: &[u32]) -> Vec<u32> {
    let mut all = Vec::new();
    let mut stack = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if all.contains(&pid) {
            continue;
        }
        all.push(pid);
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                    stack.extend(
                        children
                            .split_ascii_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
    }
    all
}

#[derive(Clone, Copy, Debug, Default)]
struct ProcSample {
    /// Server CPU seconds (all processes), user + system.
    cpu_s: f64,
    /// The system (kernel) part of `cpu_s`.
    sys_s: f64,
    /// Server RSS bytes (all processes).
    rss: u64,
    processes: usize,
    /// This process's CPU seconds.
    self_cpu_s: f64,
}

fn sample(pids: &[u32]) -> ProcSample {
    let all = with_descendants(pids);
    let mut s = ProcSample {
        processes: all.len(),
        ..Default::default()
    };
    for pid in all {
        let (user, sys) = proc_cpu_ticks(pid).unwrap_or_default();
        s.cpu_s += (user + sys) as f64 / TICKS_PER_S;
        s.sys_s += sys as f64 / TICKS_PER_S;
        s.rss += proc_rss_bytes(pid).unwrap_or(0);
    }
    let (user, sys) = proc_cpu_ticks(std::process::id()).unwrap_or_default();
    s.self_cpu_s = (user + sys) as f64 / TICKS_PER_S;
    s
}

// ---------------------------------------------------------------- state

struct Shared {
    cli: Cli,
    /// Operations counted (acks in the window, deliveries, connections).
    ops: Cell<u64>,
    /// Broadcasts sent.
    sent: Cell<u64>,
    errors: Cell<u64>,
    first_error: RefCell<Option<String>>,
    hist: RefCell<Histogram<u64>>,
    /// `echo`: the measured window, µs since start.
    window: Cell<(u64, u64)>,
    /// `broadcast`: when the last delivery arrived, µs since start.
    last_delivery_us: Cell<u64>,
    /// Frames that were not expected in the scenario.
    unexpected: Cell<u64>,
}

impl Shared {
    fn error(&self, err: anyhow::Error) {
        self.errors.set(self.errors.get() + 1);
        let mut first = self.first_error.borrow_mut();
        if first.is_none() {
            *first = Some(format!("{err:#}"));
        }
    }

    fn record(&self, latency_us: u64) {
        let _ = self.hist.borrow_mut().record(latency_us.max(1));
    }
}

// ---------------------------------------------------------------- connections

fn url(host: &str, port: u16) -> String {
    format!("ws://{host}:{port}/socket.io/?EIO=4&transport=websocket")
}

async fn next_text(ws: &mut Ws) -> Result<String> {
    loop {
        match ws.next().await {
            None => bail!("connection closed"),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(Message::Close(_))) => bail!("closed by the server"),
            Some(Ok(_)) => {}
        }
    }
}

/// WebSocket handshake, Engine.IO open, Socket.IO connect to `/`.
async fn open(host: &str, port: u16) -> Result<Ws> {
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connect {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    // Close with a reset: no TIME_WAIT left on loopback between runs.
    tcp.set_zero_linger()?;
    // tungstenite zero-fills its whole read buffer before every read (also the
    // reads that find nothing): its 128 KiB default made that memset the load
    // generator's main cost. 4 KiB, like rsio and socketioxide.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) = client_async_with_config(url(host, port), tcp, Some(config))
        .await
        .context("websocket handshake")?;
    let t = next_text(&mut ws).await?;
    if frame::parse(&t) != Frame::Open {
        bail!("expected the Engine.IO open packet, got {t:?}");
    }
    ws.send(Message::text("40")).await?;
    loop {
        let t = next_text(&mut ws).await?;
        match frame::parse(&t) {
            Frame::Connected => return Ok(ws),
            Frame::Ping => ws.send(Message::text("3")).await?,
            Frame::ConnectError(e) => bail!("connect refused: {e}"),
            _ => {}
        }
    }
}

/// Answers pings until `until` completes.
async fn idle<F: std::future::Future>(ws: &mut Ws, until: F) -> Result<F::Output> {
    tokio::pin!(until);
    loop {
        tokio::select! {
            out = &mut until => return Ok(out),
            msg = ws.next() => match msg {
                None => bail!("connection closed"),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => {
                    if frame::parse(&t) == Frame::Ping {
                        ws.send(Message::text("3")).await?;
                    }
                }
                Some(Ok(Message::Close(_))) => bail!("closed by the server"),
                Some(Ok(_)) => {}
            }
        }
    }
}

async fn wait_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Sends `42<id>["join","room"]` and waits for its ack.
async fn join(ws: &mut Ws, room: &str) -> Result<()> {
    ws.send(Message::text(frame::join(0, room))).await?;
    loop {
        let t = next_text(ws).await?;
        match frame::parse(&t) {
            Frame::Ack { id: 0, .. } => return Ok(()),
            Frame::Ping => ws.send(Message::text("3")).await?,
            _ => {}
        }
    }
}

// ---------------------------------------------------------------- scenarios

struct Setup {
    ready: mpsc::UnboundedSender<Result<()>>,
    go: watch::Receiver<bool>,
    stop: watch::Receiver<bool>,
    permits: Rc<Semaphore>,
}

/// Connects (holding a permit of the bounded concurrency), optionally joins
/// the room, tells the main task, and waits for `go`.
async fn setup(shared: &Shared, s: &mut Setup, port: u16, room: bool) -> Option<Ws> {
    let res = async {
        let _permit = s.permits.acquire().await?;
        let mut ws = tokio::time::timeout(Duration::from_secs(15), open(&shared.cli.host, port))
            .await
            .map_err(|_| anyhow!("connect timed out"))??;
        if room {
            tokio::time::timeout(Duration::from_secs(15), join(&mut ws, &shared.cli.room))
                .await
                .map_err(|_| anyhow!("join timed out"))??;
        }
        anyhow::Ok(ws)
    }
    .await;
    match res {
        Ok(mut ws) => {
            let _ = s.ready.send(Ok(()));
            let mut go = s.go.clone();
            let mut stop = s.stop.clone();
            let started = idle(&mut ws, async {
                tokio::select! {
                    _ = wait_signal(&mut go) => true,
                    _ = wait_signal(&mut stop) => false,
                }
            })
            .await;
            match started {
                Ok(true) => Some(ws),
                Ok(false) => None,
                Err(e) => {
                    shared.error(e);
                    None
                }
            }
        }
        Err(e) => {
            let _ = s.ready.send(Err(e));
            None
        }
    }
}

/// `connect`: holds the connection idle until `stop`.
async fn connect_client(shared: Rc<Shared>, mut s: Setup, port: u16) {
    let Some(mut ws) = setup(&shared, &mut s, port, false).await else {
        return;
    };
    let mut stop = s.stop.clone();
    if let Err(e) = idle(&mut ws, wait_signal(&mut stop)).await {
        shared.error(e);
    }
}

/// `echo`: W emits in flight, a new one for each ack, until the window ends.
async fn echo_client(shared: Rc<Shared>, mut s: Setup, port: u16) {
    let Some(mut ws) = setup(&shared, &mut s, port, false).await else {
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
        ws.feed(Message::text(frame::echo(next_id, now_us(), size)))
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
        let mut msg = first;
        let mut written = false;
        // Handle what is ready now, then write all the replies at once.
        loop {
            let text = match msg {
                None => bail!("connection closed"),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Message::Text(t))) => t,
                Some(Ok(Message::Close(_))) => bail!("closed by the server"),
                Some(Ok(_)) => Default::default(),
            };
            match frame::parse(&text) {
                Frame::Ack { args, .. } => {
                    let now = now_us();
                    let ts = frame::leading_timestamp(args)
                        .ok_or_else(|| anyhow!("ack without a timestamp: {text}"))?;
                    if now >= w_start && now <= w_end {
                        shared.ops.set(shared.ops.get() + 1);
                        shared.record(now.saturating_sub(ts));
                    }
                    if now < w_end {
                        ws.feed(Message::text(frame::echo(next_id, now, size)))
                            .await?;
                        next_id += 1;
                        written = true;
                    }
                }
                Frame::Ping => {
                    ws.feed(Message::text("3")).await?;
                    written = true;
                }
                Frame::Close => bail!("session closed by the server"),
                _ if text.is_empty() => {}
                _ => shared.unexpected.set(shared.unexpected.get() + 1),
            }
            match ws.next().now_or_never() {
                Some(m) => msg = m,
                None => break,
            }
        }
        if written {
            ws.flush().await?;
        }
    }
}

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
                ws.send(Message::text(frame::broadcast(&shared.cli.room, now_us(), size))).await?;
                sent += 1;
                shared.sent.set(shared.sent.get() + 1);
            }
            m = ws.next() => {
                let mut msg = m;
                let mut written = false;
                loop {
                    let text = match msg {
                        None => bail!("connection closed"),
                        Some(Err(e)) => return Err(e.into()),
                        Some(Ok(Message::Text(t))) => t,
                        Some(Ok(Message::Close(_))) => bail!("closed by the server"),
                        Some(Ok(_)) => Default::default(),
                    };
                    match frame::parse(&text) {
                        Frame::Event { name: "bcast", rest } => {
                            let now = now_us();
                            let ts = frame::leading_timestamp(rest)
                                .ok_or_else(|| anyhow!("bcast without a timestamp: {text}"))?;
                            shared.ops.set(shared.ops.get() + 1);
                            shared.last_delivery_us.set(now);
                            shared.record(now.saturating_sub(ts));
                        }
                        Frame::Ping => {
                            ws.feed(Message::text("3")).await?;
                            written = true;
                        }
                        Frame::Close => bail!("session closed by the server"),
                        _ if text.is_empty() => {}
                        _ => shared.unexpected.set(shared.unexpected.get() + 1),
                    }
                    match ws.next().now_or_never() {
                        Some(m) => msg = m,
                        None => break,
                    }
                }
                if written {
                    ws.flush().await?;
                }
            }
        }
    }
}

// ---------------------------------------------------------------- driver

struct Run {
    shared: Rc<Shared>,
    ready_rx: mpsc::UnboundedReceiver<Result<()>>,
    ready_tx: mpsc::UnboundedSender<Result<()>>,
    go_tx: watch::Sender<bool>,
    stop_tx: watch::Sender<bool>,
    permits: Rc<Semaphore>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Run {
    fn new(cli: &Cli) -> Run {
        let (ready_tx, ready_rx) = mpsc::unbounded_channel();
        Run {
            shared: Rc::new(Shared {
                cli: cli.clone(),
                ops: Cell::new(0),
                sent: Cell::new(0),
                errors: Cell::new(0),
                first_error: RefCell::new(None),
                hist: RefCell::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).unwrap()),
                window: Cell::new((0, 0)),
                last_delivery_us: Cell::new(0),
                unexpected: Cell::new(0),
            }),
            ready_rx,
            ready_tx,
            go_tx: watch::channel(false).0,
            stop_tx: watch::channel(false).0,
            permits: Rc::new(Semaphore::new(cli.concurrency.max(1))),
            tasks: Vec::new(),
        }
    }

    fn setup(&self) -> Setup {
        Setup {
            ready: self.ready_tx.clone(),
            go: self.go_tx.subscribe(),
            stop: self.stop_tx.subscribe(),
            permits: self.permits.clone(),
        }
    }

    /// Waits for `n` clients to be set up; returns how many succeeded.
    async fn wait_ready(&mut self, n: usize, label: &str) -> usize {
        let mut ok = 0;
        let quiet = self.shared.cli.quiet;
        let mut last = Instant::now();
        for i in 0..n {
            match self.ready_rx.recv().await {
                Some(Ok(())) => ok += 1,
                Some(Err(e)) => self.shared.error(e),
                None => break,
            }
            if !quiet && last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                eprintln!("  {label}: {}/{n} clients set up", i + 1);
            }
        }
        ok
    }

    async fn finish(self) {
        let _ = self.stop_tx.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

fn spread(ports: &[u16], i: usize) -> u16 {
    ports[i % ports.len()]
}

fn progress(shared: Rc<Shared>, what: &'static str) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_local(async move {
        if shared.cli.quiet {
            return;
        }
        let t0 = Instant::now();
        let mut last = 0;
        loop {
            sleep(Duration::from_secs(1)).await;
            let ops = shared.ops.get();
            eprintln!(
                "  [{} {:?} {:>5.1}s] {what}: {ops} (+{}/s), errors {}",
                shared.cli.label,
                shared.cli.scenario,
                t0.elapsed().as_secs_f64(),
                ops - last,
                shared.errors.get()
            );
            last = ops;
        }
    })
}

fn latency(hist: &Histogram<u64>) -> Value {
    if hist.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": hist.value_at_quantile(0.50),
        "p90": hist.value_at_quantile(0.90),
        "p99": hist.value_at_quantile(0.99),
        "p999": hist.value_at_quantile(0.999),
        "max": hist.max(),
        "mean": (hist.mean() * 10.0).round() / 10.0,
    })
}

fn per_op_us(cpu_s: f64, ops: u64) -> Value {
    if ops == 0 {
        Value::Null
    } else {
        json!((cpu_s * 1e6 / ops as f64 * 1000.0).round() / 1000.0)
    }
}

/// The kernel's part of the server CPU time between two samples.
fn sys_fraction(a: &ProcSample, b: &ProcSample) -> Value {
    let cpu = b.cpu_s - a.cpu_s;
    if cpu <= 0.0 {
        Value::Null
    } else {
        json!(((b.sys_s - a.sys_s) / cpu * 100.0).round() / 100.0)
    }
}

async fn run_connect(cli: &Cli) -> Result<Value> {
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

async fn run_echo(cli: &Cli) -> Result<Value> {
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
    }))
}

async fn run_broadcast(cli: &Cli) -> Result<Value> {
    let cross = cli.scenario == Scenario::CrossWorker;
    if cross && cli.ports.len() < 2 {
        bail!("cross-worker needs at least two ports");
    }
    let senders = cli.senders.max(1);
    // Who connects where, and who sends.
    let mut plan: Vec<(u16, bool)> = Vec::new();
    if cross {
        plan.extend((0..senders).map(|_| (cli.ports[0], true)));
        plan.extend((0..cli.clients).map(|i| (spread(&cli.ports[1..], i), false)));
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
    Ok(json!({
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
    }))
}

async fn broadcast_client_lazy(
    shared: Rc<Shared>,
    mut s: Setup,
    port: u16,
    send_plan: impl FnOnce() -> Option<(Instant, Duration, u64)>,
) {
    let Some(mut ws) = setup(&shared, &mut s, port, true).await else {
        return;
    };
    let mut stop = s.stop.clone();
    let send = send_plan();
    if let Err(e) = broadcast_loop(&shared, &mut ws, send, &mut stop).await {
        shared.error(e);
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let limit = Duration::from_secs_f64(cli.max_time);
    let result = local.block_on(&runtime, async {
        let fut = async {
            match cli.scenario {
                Scenario::Connect => run_connect(&cli).await,
                Scenario::Echo => run_echo(&cli).await,
                Scenario::Broadcast | Scenario::CrossWorker => run_broadcast(&cli).await,
            }
        };
        match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("run exceeded --max-time {}s", cli.max_time)),
        }
    });
    let scenario = format!("{:?}", cli.scenario).to_lowercase();
    let mut out = json!({
        "server": cli.label,
        "scenario": if cli.scenario == Scenario::CrossWorker { "cross-worker".to_string() } else { scenario },
        "clients": cli.clients,
        "ports": cli.ports,
        "rep": cli.rep,
    });
    let code = match result {
        Ok(Value::Object(fields)) => {
            out.as_object_mut().unwrap().extend(fields);
            std::process::ExitCode::SUCCESS
        }
        Ok(_) => unreachable!(),
        Err(e) => {
            out["error"] = json!(format!("{e:#}"));
            eprintln!("rsio-loadgen: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    println!("{out}");
    code
}
