//! `rsio-wakecost`: what this machine charges a process for being woken, the
//! fixed cost behind the `rooms` scenario's growth with W (see
//! `scripts/bench`). N sleeper processes, pinned to one CPU, each block on a
//! pipe; this process, pinned elsewhere by its caller, wakes them in turn
//! with one byte each at R wake-ups per second in all (so each sleeper is
//! woken R/N times a second, as a worker of a W-worker cluster gets R/W of
//! the broadcasts), and reads their CPU time (`/proc/PID/schedstat`). A
//! sleeper does nothing but read its byte: its CPU per wake-up is the cost
//! of a wake-up, a context switch and one `read`, whatever the server.
//!
//! ```text
//! taskset -c 1 rsio-wakecost --sleepers 1,2,4,8 --rate 2000 --cpu 0
//! ```
//!
//! Prints a Markdown table: sleepers, wake-ups per second each, CPU µs per
//! wake-up (median of the repetitions), and its ratio to one sleeper's.

use std::{
    io::{Read, Write},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// Sleeper counts to measure, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    sleepers: Vec<usize>,
    /// Wake-ups per second, in all.
    #[arg(long, default_value_t = 2000)]
    rate: u64,
    /// Wake-ups per measurement.
    #[arg(long, default_value_t = 8000)]
    wakeups: u64,
    /// Measurements per sleeper count (alternating counts); the median is kept.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// The CPU the sleepers are pinned to (with `taskset`).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Run as a sleeper (internal).
    #[arg(long, hide = true)]
    sleeper: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if cli.sleeper {
        return sleep_on_stdin();
    }
    if cli.sleepers.is_empty() || cli.rate == 0 || cli.wakeups == 0 {
        bail!("--sleepers, --rate and --wakeups must not be empty or 0");
    }
    let mut results: Vec<Vec<f64>> = vec![Vec::new(); cli.sleepers.len()];
    for _ in 0..cli.reps {
        for (i, &n) in cli.sleepers.iter().enumerate() {
            results[i].push(measure(&cli, n)?);
        }
    }
    let medians: Vec<f64> = results.into_iter().map(median).collect();
    println!("| sleepers | wake-ups/s each | CPU µs per wake-up | × 1 sleeper |");
    println!("|--:|--:|--:|--:|");
    let base = cli
        .sleepers
        .iter()
        .position(|&n| n == 1)
        .map(|i| medians[i]);
    for (&n, &m) in cli.sleepers.iter().zip(&medians) {
        let ratio = base.map_or("–".to_string(), |b| format!("{:.2}×", m / b));
        println!("| {n} | {} | {m:.2} | {ratio} |", cli.rate / n as u64);
    }
    Ok(())
}

/// A sleeper: reads one byte at a time until its stdin ends.
fn sleep_on_stdin() -> Result<()> {
    let mut stdin = std::io::stdin().lock();
    let mut byte = [0u8; 1];
    while stdin.read(&mut byte)? == 1 {}
    Ok(())
}

/// The sleepers' CPU µs per wake-up, `n` of them woken in turn.
fn measure(cli: &Cli, n: usize) -> Result<f64> {
    let exe = std::env::current_exe().context("own path")?;
    let mut children: Vec<Child> = (0..n)
        .map(|_| {
            Command::new("taskset")
                .arg("-c")
                .arg(cli.cpu.to_string())
                .arg(&exe)
                .arg("--sleeper")
                .stdin(Stdio::piped())
                .spawn()
                .context("spawning a sleeper with taskset")
        })
        .collect::<Result<_>>()?;
    // Let them exec and block.
    std::thread::sleep(Duration::from_millis(200));
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let before = cpu_ns(&pids)?;
    let every = Duration::from_nanos(1_000_000_000 / cli.rate);
    let mut next = Instant::now();
    for k in 0..cli.wakeups {
        next += every;
        // Spin rather than sleep: this process's own wake-ups stay out of the way.
        while Instant::now() < next {
            std::hint::spin_loop();
        }
        let child = &mut children[k as usize % n];
        child
            .stdin
            .as_mut()
            .context("a sleeper's stdin")?
            .write_all(b"x")?;
    }
    std::thread::sleep(Duration::from_millis(100));
    let after = cpu_ns(&pids)?;
    for mut child in children {
        drop(child.stdin.take());
        child.wait()?;
    }
    Ok((after - before) as f64 / 1e3 / cli.wakeups as f64)
}

/// Run time of `pids` in ns (`/proc/PID/schedstat`'s first field), summed.
fn cpu_ns(pids: &[u32]) -> Result<u64> {
    pids.iter()
        .map(|pid| {
            let path = format!("/proc/{pid}/schedstat");
            let text = std::fs::read_to_string(&path).with_context(|| path.clone())?;
            text.split_whitespace()
                .next()
                .and_then(|f| f.parse::<u64>().ok())
                .with_context(|| format!("{path}: {text}"))
        })
        .sum()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}
