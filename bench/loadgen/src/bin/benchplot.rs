//! `rsio-benchplot`: turns the raw runs of `scripts/bench` (one JSON line per
//! `rsio-loadgen` run) into `<out>.json` (every run and the medians of each
//! point), `<out>.md` (per-core figures and ratios) and PNG plots
//! (`<out>-echo-throughput.png`, `<out>-echo-latency.png`,
//! `<out>-broadcast-latency.png`).
//!
//! ```text
//! rsio-benchplot --raw runs.jsonl --out bench/results/DATE --font /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::PathBuf,
};

use anyhow::{Context as _, Result};
use clap::Parser;
use plotters::prelude::*;
use serde_json::{json, Map, Value};

#[derive(Parser)]
struct Cli {
    /// One JSON result per line, from rsio-loadgen.
    #[arg(long)]
    raw: PathBuf,
    /// Output prefix: writes <out>.json, <out>.md and <out>-*.png.
    #[arg(long)]
    out: String,
    #[arg(long, default_value = "")]
    title: String,
    /// `key=value,…` copied into the JSON and the Markdown.
    #[arg(long, default_value = "")]
    meta: String,
    /// A TTF font for the plot labels; without it, no PNG is drawn.
    #[arg(long)]
    font: Option<PathBuf>,
}

/// Order in tables and plots; servers not listed come after.
const SERVER_ORDER: [&str; 4] = ["rsio", "node", "socketioxide", "bare"];

fn server_rank(s: &str) -> usize {
    SERVER_ORDER
        .iter()
        .position(|x| *x == s)
        .unwrap_or(SERVER_ORDER.len())
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    scenario: String,
    mode: String,
    clients: u64,
    rank: usize,
    server: String,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn field(run: &Value, path: &str) -> Option<f64> {
    let mut v = run;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    v.as_f64()
}

/// Median figures of one point (server × scenario × clients).
#[derive(Clone, Debug, Default)]
struct Point {
    runs: usize,
    failed: usize,
    errors: f64,
    lost: f64,
    fields: BTreeMap<&'static str, f64>,
}

const FIELDS: [&str; 13] = [
    "ops_per_s",
    "server_cpu_us_per_op",
    "server_sys_fraction",
    "loadgen_cpu_us_per_op",
    "latency_us.p50",
    "latency_us.p90",
    "latency_us.p99",
    "latency_us.p999",
    "latency_us.max",
    "rss_per_conn",
    "server_rss_idle",
    "delivered",
    "expected",
];

impl Point {
    fn get(&self, f: &str) -> Option<f64> {
        self.fields.get(f).copied()
    }

    /// Operations per second one core of server CPU sustains.
    fn per_core(&self) -> Option<f64> {
        self.get("server_cpu_us_per_op")
            .filter(|c| *c > 0.0)
            .map(|c| 1e6 / c)
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("runs".into(), json!(self.runs));
        m.insert("failed_runs".into(), json!(self.failed));
        m.insert("errors".into(), json!(self.errors));
        m.insert("lost".into(), json!(self.lost));
        for (k, v) in &self.fields {
            m.insert(k.replace("latency_us.", "latency_us_"), json!(v));
        }
        if let Some(p) = self.per_core() {
            m.insert("per_core_ops_per_s".into(), json!(p.round()));
        }
        Value::Object(m)
    }
}

fn summarize(runs: &[Value]) -> BTreeMap<Key, Point> {
    let mut groups: BTreeMap<Key, Vec<&Value>> = BTreeMap::new();
    for run in runs {
        let s = |k: &str| run.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let server = s("server");
        let key = Key {
            scenario: s("scenario"),
            mode: s("mode"),
            clients: run.get("clients").and_then(Value::as_u64).unwrap_or(0),
            rank: server_rank(&server),
            server,
        };
        groups.entry(key).or_default().push(run);
    }
    groups
        .into_iter()
        .map(|(key, runs)| {
            let ok: Vec<&Value> = runs
                .iter()
                .copied()
                .filter(|r| r.get("error").is_none())
                .collect();
            let mut p = Point {
                runs: ok.len(),
                failed: runs.len() - ok.len(),
                ..Default::default()
            };
            // (A sum of no f64 is -0.)
            p.errors = ok.iter().filter_map(|r| field(r, "errors")).sum::<f64>() + 0.0;
            p.lost = ok.iter().filter_map(|r| field(r, "lost")).sum::<f64>() + 0.0;
            for f in FIELDS {
                if let Some(m) = median(ok.iter().filter_map(|r| field(r, f)).collect()) {
                    p.fields.insert(f, m);
                }
            }
            (key, p)
        })
        .collect()
}

fn fmt_num(v: Option<f64>) -> String {
    match v {
        None => "–".into(),
        Some(v) if v >= 100.0 => format!("{:.0}", v),
        Some(v) if v >= 10.0 => format!("{:.1}", v),
        Some(v) => format!("{:.2}", v),
    }
}

fn fmt_ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

fn markdown(cli: &Cli, sum: &BTreeMap<Key, Point>) -> String {
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
        if scenario.is_empty() {
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
        let peers: Vec<&str> = ["node", "socketioxide", "bare"]
            .into_iter()
            .filter(|s| rows.iter().any(|(k, _)| k.server == *s))
            .collect();
        if rows.iter().any(|(k, _)| k.server == "rsio") && !peers.is_empty() {
            let _ = writeln!(
                md,
                "\n| rsio / peer | clients | per core (higher: rsio better) | measured/s | p99 latency (lower: rsio better) | RSS/conn |"
            );
            let _ = writeln!(md, "|---|--:|--:|--:|--:|--:|");
            for c in &clients {
                let Some(r) = find("rsio", *c) else { continue };
                for peer in &peers {
                    let Some(o) = find(peer, *c) else { continue };
                    let _ = writeln!(
                        md,
                        "| rsio / {peer} | {c} | {} | {} | {} | {} |",
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
    md.push_str(&targets(sum));
    md
}

/// The issue's targets against this run's medians.
fn targets(sum: &BTreeMap<Key, Point>) -> String {
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
    md
}

// ------------------------------------------------------------------ plots

fn color(server: &str) -> RGBColor {
    match server {
        "rsio" => RGBColor(0xd9, 0x48, 0x1c),
        "node" => RGBColor(0x2b, 0x7a, 0x2b),
        "socketioxide" => RGBColor(0x1f, 0x5f, 0xbf),
        "bare" => RGBColor(0x70, 0x70, 0x70),
        _ => RGBColor(0x90, 0x30, 0x90),
    }
}

type Points = Vec<(f64, f64)>;
type Series = Vec<(String, Points)>;
type Summary = BTreeMap<Key, Point>;
type PlotFn = fn(&str, &Summary) -> DrawResult;

/// Per server, (clients, value) of `scenario` for a figure.
fn series(
    sum: &BTreeMap<Key, Point>,
    scenario: &str,
    value: impl Fn(&Point) -> Option<f64>,
) -> Series {
    let mut out: Vec<(usize, String, Points)> = Vec::new();
    for (k, p) in sum.iter().filter(|(k, _)| k.scenario == scenario) {
        let Some(v) = value(p) else { continue };
        match out.iter_mut().find(|(_, s, _)| *s == k.server) {
            Some((_, _, pts)) => pts.push((k.clients as f64, v)),
            None => out.push((k.rank, k.server.clone(), vec![(k.clients as f64, v)])),
        }
    }
    out.sort_by_key(|(r, _, _)| *r);
    out.into_iter().map(|(_, s, p)| (s, p)).collect()
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn line_chart<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    caption: &str,
    y_desc: &str,
    data: &[(String, Vec<(f64, f64)>)],
    log_y: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let xs = data.iter().flat_map(|(_, p)| p.iter().map(|(x, _)| *x));
    let ys = data.iter().flat_map(|(_, p)| p.iter().map(|(_, y)| *y));
    let (xmin, xmax) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let (ymin, ymax) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    if xmin > xmax {
        return Ok(());
    }
    let xr = (xmin.max(1.0) / 1.5)..(xmax * 1.5);
    let mut b = ChartBuilder::on(area);
    b.caption(caption, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(78);
    let fmt_y = |v: &f64| {
        if *v >= 1e6 {
            format!("{:.1}M", v / 1e6)
        } else if *v >= 1e3 {
            format!("{:.0}k", v / 1e3)
        } else {
            format!("{v:.0}")
        }
    };
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("clients")
                .y_desc(y_desc)
                .y_label_formatter(&fmt_y)
                .x_label_formatter(&|v| format!("{v:.0}"))
                .draw()?;
            for (server, pts) in data {
                let c = color(server);
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                    .label(server.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                    });
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 16))
                .draw()?;
        }};
    }
    if log_y {
        let yr = (ymin.max(1.0) / 2.0)..(ymax * 2.0);
        draw!(b.build_cartesian_2d(xr.log_scale(), yr.log_scale())?);
    } else {
        let yr = 0.0..(ymax * 1.15).max(1.0);
        draw!(b.build_cartesian_2d(xr.log_scale(), yr)?);
    }
    Ok(())
}

fn plot_echo_throughput(path: &str, sum: &BTreeMap<Key, Point>) -> DrawResult {
    let measured = series(sum, "echo", |p| p.get("ops_per_s"));
    let per_core = series(sum, "echo", Point::per_core);
    if measured.is_empty() {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (l, r) = root.split_horizontally(700);
    line_chart(&l, "echo: measured acks/s", "acks/s", &measured, false)?;
    line_chart(
        &r,
        "echo: acks/s per server core (1e6 / CPU µs per ack)",
        "acks/s per core",
        &per_core,
        false,
    )?;
    root.present()?;
    Ok(())
}

fn plot_echo_latency(path: &str, sum: &BTreeMap<Key, Point>) -> DrawResult {
    let p50 = series(sum, "echo", |p| p.get("latency_us.p50"));
    let p99 = series(sum, "echo", |p| p.get("latency_us.p99"));
    if p50.is_empty() {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (l, r) = root.split_horizontally(700);
    line_chart(&l, "echo latency p50 (µs)", "µs", &p50, true)?;
    line_chart(&r, "echo latency p99 (µs)", "µs", &p99, true)?;
    root.present()?;
    Ok(())
}

/// Fan-out latency percentiles of the broadcast scenarios, one line per server.
fn plot_broadcast_latency(path: &str, sum: &BTreeMap<Key, Point>) -> DrawResult {
    let quantiles = ["p50", "p90", "p99", "p999", "max"];
    let panels: Vec<(&str, Series)> = ["broadcast", "cross-worker"]
        .into_iter()
        .map(|scenario| {
            let mut data: Series = Vec::new();
            for (k, p) in sum.iter().filter(|(k, _)| k.scenario == scenario) {
                let pts: Vec<(f64, f64)> = quantiles
                    .iter()
                    .enumerate()
                    .filter_map(|(i, q)| p.get(&format!("latency_us.{q}")).map(|v| (i as f64, v)))
                    .collect();
                if !pts.is_empty() {
                    data.push((format!("{} (C={})", k.server, k.clients), pts));
                }
            }
            (scenario, data)
        })
        .filter(|(_, d)| !d.is_empty())
        .collect();
    if panels.is_empty() {
        return Ok(());
    }
    let root = BitMapBackend::new(path, (700 * panels.len() as u32, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len()));
    for (area, (scenario, data)) in areas.iter().zip(&panels) {
        let ymax = data
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(1.0f64, f64::max);
        let ymin = data
            .iter()
            .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
            .fold(f64::MAX, f64::min)
            .max(1.0);
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{scenario}: fan-out latency percentiles (µs)"),
                ("sans-serif", 22),
            )
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(78)
            .build_cartesian_2d(
                -0.3f64..(quantiles.len() as f64 - 0.7),
                ((ymin / 2.0)..(ymax * 2.0)).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_labels(quantiles.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 0.01 && i >= 0.0 && (i as usize) < quantiles.len() {
                    quantiles[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .y_desc("µs")
            .draw()?;
        for (name, pts) in data {
            let c = color(name.split(' ').next().unwrap_or(""));
            chart
                .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, c.filled())))?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 16))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.raw)
        .with_context(|| format!("reading {}", cli.raw.display()))?;
    let runs: Vec<Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()
        .context("parsing the raw runs")?;
    let sum = summarize(&runs);

    let meta: Map<String, Value> = cli
        .meta
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let summary: Vec<Value> = sum
        .iter()
        .map(|(k, p)| {
            let mut v = json!({
                "server": k.server, "scenario": k.scenario, "mode": k.mode, "clients": k.clients,
            });
            if let (Value::Object(a), Value::Object(b)) = (&mut v, p.to_json()) {
                a.extend(b);
            }
            v
        })
        .collect();
    let doc = json!({ "title": cli.title, "meta": meta, "summary": summary, "runs": runs });
    std::fs::write(
        format!("{}.json", cli.out),
        serde_json::to_string_pretty(&doc)? + "\n",
    )?;
    std::fs::write(format!("{}.md", cli.out), markdown(&cli, &sum))?;

    match &cli.font {
        Some(font) => {
            let bytes: &'static [u8] = Box::leak(
                std::fs::read(font)
                    .with_context(|| format!("reading {}", font.display()))?
                    .into_boxed_slice(),
            );
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
                .map_err(|_| anyhow::anyhow!("{} is not a usable font", font.display()))?;
            let plots: [(&str, PlotFn); 3] = [
                ("echo-throughput", plot_echo_throughput),
                ("echo-latency", plot_echo_latency),
                ("broadcast-latency", plot_broadcast_latency),
            ];
            for (name, plot) in plots {
                let path = format!("{}-{name}.png", cli.out);
                if let Err(e) = plot(&path, &sum) {
                    eprintln!("rsio-benchplot: {path}: {e}");
                }
            }
        }
        None => eprintln!("rsio-benchplot: no --font: no plots drawn"),
    }
    Ok(())
}
