//! `<out>.md`: per-core figures, ratios to each peer, and the targets table.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use crate::{
    rooms,
    summary::{Key, Point},
    Cli,
};

pub fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 100.0 => format!("{:.0}", v),
        Some(v) if v >= 10.0 => format!("{:.1}", v),
        Some(v) => format!("{:.2}", v),
    }
}

pub fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

pub fn markdown(cli: &Cli, sum: &BTreeMap<Key, Point>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# rsio benchmark {}\n", cli.title);
    let _ = writeln!(
        md,
        "Medians of the repetitions. Each server runs as one process pinned to CPU 0 \
         (`cross-worker`: a cluster of 2 workers, both on CPU 0), the load generator on CPU 1. \
         **Per core** = 1e6 / server CPU µs per operation (CPU time from /proc over the measured \
         window), i.e. what one core of the server would sustain; *measured/s* is what this run \
         achieved and may be bounded by the load generator or by other load on the machine. \
         *Kernel share*: the system part of that CPU time (loopback TCP). \
         Latencies in µs. Compare servers only within this run.\n"
    );
    if !cli.meta.is_empty() {
        let _ = writeln!(md, "Run: `{}`\n", cli.meta);
    }
    let scenarios: BTreeSet<(String, String)> = sum
        .keys()
        .map(|k| (k.scenario.clone(), k.mode.clone()))
        .collect();
    let order = ["connect", "echo", "broadcast", "cross-worker"];
    let mut scenarios: Vec<_> = scenarios.into_iter().collect();
    scenarios.sort_by_key(|(s, _)| order.iter().position(|o| o == s).unwrap_or(9));
    for (scenario, mode) in &scenarios {
        // `rooms` and `cross-host` have their own sections.
        if scenario.is_empty() || scenario == "rooms" || scenario == "cross-host" {
            continue;
        }
        let rows: Vec<(&Key, &Point)> = sum
            .iter()
            .filter(|(k, _)| &k.scenario == scenario && &k.mode == mode)
            .collect();
        let _ = writeln!(md, "## {scenario} ({mode})\n");
        let (unit, extra) = match scenario.as_str() {
            "connect" => ("connections", "RSS/idle conn (B)"),
            "echo" => ("acks", "loadgen CPU µs/op"),
            _ => ("deliveries", "lost / expected"),
        };
        let _ = writeln!(
            md,
            "| server | clients | measured {unit}/s | server CPU µs/op | kernel share | per core {unit}/s | p50 | p99 | max | {extra} | runs |"
        );
        let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
        for (k, p) in &rows {
            let extra = match scenario.as_str() {
                "connect" => fmt_num(p.get("rss_per_conn")),
                "echo" => fmt_num(p.get("loadgen_cpu_us_per_op")),
                _ => format!("{} / {}", p.lost, fmt_num(p.get("expected"))),
            };
            let failed = if p.failed > 0 || p.errors > 0.0 {
                format!(" ({} failed, {} errors)", p.failed, p.errors)
            } else {
                String::new()
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{} |",
                k.server,
                k.clients,
                fmt_num(p.get("ops_per_s")),
                fmt_num(p.get("server_cpu_us_per_op")),
                p.get("server_sys_fraction")
                    .map(|f| format!("{:.0}%", f * 100.0))
                    .unwrap_or_else(|| "–".into()),
                fmt_num(p.per_core()),
                fmt_num(p.get("latency_us.p50")),
                fmt_num(p.get("latency_us.p99")),
                fmt_num(p.get("latency_us.max")),
                extra,
                p.runs,
                failed
            );
        }
        // Ratios of rsio against each peer at each client count.
        let clients: BTreeSet<u64> = rows.iter().map(|(k, _)| k.clients).collect();
        let find = |server: &str, c: u64| {
            rows.iter()
                .find(|(k, _)| k.server == server && k.clients == c)
                .map(|(_, p)| *p)
        };
        // Each variant (`scripts/bench --deflate` adds `-deflate`) against the
        // same variant of the peers; rsio's own variants (`--variant NAME`:
        // `rsio-NAME`) against plain rsio.
        for variant in ["", "-deflate"] {
            let rsio = format!("rsio{variant}");
            let mut peers: Vec<String> = Vec::new();
            for (k, _) in &rows {
                let s = k.server.as_str();
                let same_variant = if variant.is_empty() {
                    !s.ends_with("-deflate")
                } else {
                    s.ends_with(variant)
                };
                if s != rsio && same_variant && !peers.iter().any(|p| p == s) {
                    peers.push(s.to_string());
                }
            }
            if !rows.iter().any(|(k, _)| k.server == rsio) || peers.is_empty() {
                continue;
            }
            let _ = writeln!(
                md,
                "\n| {rsio} / peer | clients | per core (higher: rsio better) | measured/s | p99 latency (lower: rsio better) | RSS/conn |"
            );
            let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|");
            for c in &clients {
                let Some(r) = find(&rsio, *c) else { continue };
                for peer in &peers {
                    let Some(o) = find(peer, *c) else { continue };
                    let _ = writeln!(
                        md,
                        "| {rsio} / {peer} | {c} | {} | {} | {} | {} |",
                        fmt_ratio(r.per_core(), o.per_core()),
                        fmt_ratio(r.get("ops_per_s"), o.get("ops_per_s")),
                        fmt_ratio(r.get("latency_us.p99"), o.get("latency_us.p99")),
                        fmt_ratio(r.get("rss_per_conn"), o.get("rss_per_conn")),
                    );
                }
            }
        }
        let _ = writeln!(md);
    }
    md.push_str(&rooms::markdown(sum));
    md.push_str(&crate::crosshost::markdown(sum));
    md.push_str(&targets(sum));
    md
}

/// The targets against this run's medians.
pub fn targets(sum: &BTreeMap<Key, Point>) -> String {
    let mut md = String::from("## Targets\n\n| target | this run | met |\n|---|---|---|\n");
    let get = |scenario: &str, server: &str| -> Vec<(u64, &Point)> {
        sum.iter()
            .filter(|(k, _)| k.scenario == scenario && k.server == server && k.mode == "single")
            .map(|(k, p)| (k.clients, p))
            .collect()
    };
    let mut row = |name: &str, value: String, met: Option<bool>| {
        let met = match met {
            Some(true) => "yes",
            Some(false) => "no",
            None => "–",
        };
        let _ = writeln!(md, "| {name} | {value} | {met} |");
    };
    for (c, r) in get("echo", "rsio") {
        if let Some((_, b)) = get("echo", "bare").into_iter().find(|(bc, _)| *bc == c) {
            let (rc, bc) = (r.get("server_cpu_us_per_op"), b.get("server_cpu_us_per_op"));
            let ratio = rc.zip(bc).map(|(a, b)| a / b);
            row(
                &format!("echo CPU/ack ≤ 1.15× bare tokio-tungstenite echo (C={c})"),
                format!(
                    "{} µs vs {} µs = {}",
                    fmt_num(rc),
                    fmt_num(bc),
                    fmt_ratio(rc, bc)
                ),
                ratio.map(|x| x <= 1.15),
            );
        }
    }
    for (c, r) in get("connect", "rsio") {
        let v = r.get("rss_per_conn");
        row(
            &format!("RSS per idle websocket connection ≤ 4 KiB (C={c})"),
            format!("{} B", fmt_num(v)),
            v.map(|v| v <= 4096.0),
        );
        if let Some((_, n)) = get("connect", "node").into_iter().find(|(nc, _)| *nc == c) {
            let measured = r
                .get("ops_per_s")
                .zip(n.get("ops_per_s"))
                .map(|(a, b)| a / b);
            let per_core = r.per_core().zip(n.per_core()).map(|(a, b)| a / b);
            row(
                &format!("connections/s ≥ 4× Node (C={c})"),
                format!(
                    "measured {}, per core {}",
                    fmt_ratio(r.get("ops_per_s"), n.get("ops_per_s")),
                    fmt_ratio(r.per_core(), n.per_core())
                ),
                per_core.or(measured).map(|x| x >= 4.0),
            );
        }
    }
    for scenario in ["broadcast", "cross-worker"] {
        for (key, p) in sum
            .iter()
            .filter(|(k, _)| k.scenario == scenario && k.server == "rsio")
        {
            let v = p.get("server_cpu_us_per_op");
            row(
                &format!("{scenario} CPU per delivery ≤ 4 µs (C={})", key.clients),
                format!("{} µs, lost {}", fmt_num(v), p.lost),
                v.map(|v| v <= 4.0 && p.lost == 0.0),
            );
        }
    }
    // A variant (rsio with extra flags, e.g. the metrics on) must cost within
    // 3% of plain rsio, scenario by scenario, in the same run.
    for (key, v) in sum
        .iter()
        .filter(|(k, _)| k.server.starts_with("rsio-") && !k.server.ends_with("-deflate"))
    {
        let base = sum.iter().find(|(k, _)| {
            k.server == "rsio"
                && k.scenario == key.scenario
                && k.mode == key.mode
                && k.clients == key.clients
                && k.placement == key.placement
                && k.workers == key.workers
        });
        let Some((_, b)) = base else { continue };
        let (vc, bc) = (v.get("server_cpu_us_per_op"), b.get("server_cpu_us_per_op"));
        row(
            &format!(
                "{} CPU per operation ≤ 1.03× rsio ({} C={})",
                key.server, key.scenario, key.clients
            ),
            format!(
                "{} µs vs {} µs = {}",
                fmt_num(vc),
                fmt_num(bc),
                fmt_ratio(vc, bc)
            ),
            vc.zip(bc).map(|(a, b)| a / b <= 1.03),
        );
    }
    for (name, value, met) in rooms::targets(sum) {
        row(&name, value, met);
    }
    md
}
