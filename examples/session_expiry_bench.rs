//! The primary's CPU per recoverable broadcast with 0, 10,000 and 100,000
//! stored sessions (connection state recovery): it should not grow with them.
//!
//! ```text
//! cargo run --release --example session_expiry_bench            # 20000 broadcasts, 5 rounds
//! cargo run --release --example session_expiry_bench -- 5000 3  # broadcasts, rounds
//! ```
//!
//! Each round times the broadcasts at every size, sizes alternating, each in a
//! fresh process (so that no run inherits the heap another one left); the
//! median round is printed, with its ratio to the run with no stored session.

use std::{process::Command, time::Duration};

use rsio::cluster::bench::recoverable_broadcast_cost;

const SIZES: [usize; 3] = [0, 10_000, 100_000];

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// One size in a child process: its CPU and wall time per broadcast.
fn measure(stored: usize, broadcasts: usize) -> (Duration, Duration) {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let out = Command::new(exe)
        .args(["--one", &stored.to_string(), &broadcasts.to_string()])
        .output()
        .expect("the measuring process runs");
    assert!(out.status.success(), "measuring process: {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let mut ns = text
        .split_whitespace()
        .map(|n| Duration::from_nanos(n.parse().expect("nanoseconds")));
    (ns.next().unwrap(), ns.next().unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--one") {
        let stored = args[1].parse().expect("stored sessions");
        let broadcasts = args[2].parse().expect("broadcasts");
        let cost = recoverable_broadcast_cost(stored, broadcasts);
        println!("{} {}", cost.cpu.as_nanos(), cost.wall.as_nanos());
        return;
    }
    let broadcasts: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(20_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5).max(1);
    let mut cpu = vec![Vec::new(); SIZES.len()];
    let mut wall = vec![Vec::new(); SIZES.len()];
    for _ in 0..rounds {
        for (i, &stored) in SIZES.iter().enumerate() {
            let (c, w) = measure(stored, broadcasts);
            cpu[i].push(c);
            wall[i].push(w);
        }
    }
    println!(
        "recoverable broadcasts in the primary: {broadcasts} per run, median of {rounds} rounds"
    );
    println!(
        "{:>16} {:>16} {:>16} {:>10}",
        "stored sessions", "CPU ns/bcast", "wall ns/bcast", "CPU ratio"
    );
    let base = median(cpu[0].clone()).as_nanos().max(1) as f64;
    for (i, &stored) in SIZES.iter().enumerate() {
        let c = median(cpu[i].clone()).as_nanos();
        let w = median(wall[i].clone()).as_nanos();
        println!("{stored:>16} {c:>16} {w:>16} {:>10.2}", c as f64 / base);
    }
}
