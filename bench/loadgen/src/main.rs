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
//! - `rooms`: C clients in N small rooms over the W `--ports` of a cluster,
//!   each room on one worker (`--placement local`) or over min(W, room size)
//!   workers (`spread`), one sender per room, R broadcasts per second in all
//!   (deliveries/s, server CPU per delivery from schedstat, the primary's
//!   share of it with `--primary-pid`, exactly-once delivery per member).
//! - `cross-host`: two hosts on one Redis; S senders on the first of `--ports`
//!   (host A), the C receivers on `--ports` (`--hop same-host`) or on
//!   `--far-ports` (host B, `--hop cross-host`); `--pids` names both hosts.
//!   With `--redis`, the Redis commands per broadcast (`INFO commandstats`)
//!   and, with `--redis-pid`, Redis's CPU per delivery.
//!
//! With `--pids`, the CPU time (utime + stime) and RSS of those processes and
//! all their descendants are read from /proc around the measured window, so
//! the figures include the server's CPU per operation; the load generator's
//! own CPU per operation comes from /proc/self/stat.

mod broadcast;
mod client;
mod clock;
mod connect;
mod deflate;
mod echo;
mod frame;
mod msgpack;
mod procfs;
mod redis_stats;
mod report;
mod rooms;
mod run;

use std::time::Duration;

use anyhow::anyhow;
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Scenario {
    Connect,
    Echo,
    Broadcast,
    CrossWorker,
    Rooms,
    CrossHost,
}

/// `cross-host`: where the receivers are, seen from the senders' host.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Hop {
    SameHost,
    CrossHost,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Socket.IO load generator for the rsio benchmark")]
struct Cli {
    #[arg(long, value_enum)]
    scenario: Scenario,
    /// Server ports (comma separated); clients are spread over them. In
    /// `rooms`, one per worker of the cluster (W = their number).
    #[arg(long, value_delimiter = ',', default_value = "3000")]
    ports: Vec<u16>,
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// `cross-host`: the ports of the other host (its workers).
    #[arg(long, value_delimiter = ',')]
    far_ports: Vec<u16>,
    /// `cross-host`: receivers on the senders' host or on the other one.
    #[arg(long, value_enum, default_value = "cross-host")]
    hop: Hop,
    /// `cross-host`: the shared Redis (`host:port`), for its command counts.
    #[arg(long)]
    redis: Option<String>,
    /// `cross-host`: the shared Redis's process, for its CPU per delivery.
    #[arg(long)]
    redis_pid: Option<u32>,
    /// Clients (C); in `cross-worker` and `cross-host`, the receivers.
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
    /// `rooms`: rooms (N), one sender in each.
    #[arg(long, default_value_t = 200)]
    rooms: usize,
    /// `rooms`: each room on one worker, or spread over several.
    #[arg(long, value_enum, default_value = "local")]
    placement: rooms::Placement,
    /// `rooms`: the cluster's primary, whose share of the server CPU is reported.
    #[arg(long)]
    primary_pid: Option<u32>,
    /// `broadcast`/`cross-worker`: senders (S).
    #[arg(long, default_value_t = 1)]
    senders: usize,
    /// `broadcast`/`cross-worker`/`rooms`: broadcasts per second, all senders together (R).
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    #[arg(long, default_value = "r")]
    room: String,
    /// `connect`: idle seconds before the server's RSS is read.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// `broadcast`/`rooms`: seconds to wait for the last deliveries after sending ends.
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
    /// Packet format of the server: `msgpack` for socket.io-msgpack-parser.
    #[arg(long, default_value = "default", value_parser = ["default", "msgpack"])]
    parser: String,
    /// Offer permessage-deflate as socket.io-client in Node does, and compress
    /// sends of 1024 bytes and more.
    #[arg(long)]
    deflate: bool,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.parser == "msgpack" {
        msgpack::enable();
    }
    if cli.deflate {
        deflate::enable();
    }
    clock::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let local = tokio::task::LocalSet::new();
    let limit = Duration::from_secs_f64(cli.max_time);
    let result = local.block_on(&runtime, async {
        let fut = async {
            match cli.scenario {
                Scenario::Connect => connect::run_connect(&cli).await,
                Scenario::Echo => echo::run_echo(&cli).await,
                Scenario::Broadcast | Scenario::CrossWorker | Scenario::CrossHost => {
                    broadcast::run_broadcast(&cli).await
                }
                Scenario::Rooms => rooms::run_rooms(&cli).await,
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
        "scenario": match cli.scenario {
            Scenario::CrossWorker => "cross-worker".to_string(),
            Scenario::CrossHost => "cross-host".to_string(),
            _ => scenario,
        },
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
