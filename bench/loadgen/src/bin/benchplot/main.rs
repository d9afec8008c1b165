//! `rsio-benchplot`: turns the raw runs of `scripts/bench` (one JSON line per
//! `rsio-loadgen` run) into `<out>.json` (every run and the medians of each
//! point), `<out>.md` (per-core figures and ratios) and PNG plots
//! (`<out>-echo-throughput.png`, `<out>-echo-latency.png`,
//! `<out>-broadcast-latency.png`, `<out>-rooms.png`); the `rooms` scenario
//! gets its own tables and a fitted cost model (`rooms.rs`).
//!
//! ```text
//! rsio-benchplot --raw runs.jsonl --out bench/results/DATE --font /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
//! ```

mod crosshost;
mod markdown;
mod model;
mod plots;
mod rooms;
mod summary;

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Parser;
use plotters::style::FontStyle;
use serde_json::{json, Map, Value};

use crate::{
    markdown::markdown,
    plots::{plot_broadcast_latency, plot_echo_latency, plot_echo_throughput, PlotFn},
    summary::summarize,
};

#[derive(Parser)]
struct Cli {
    /// One JSON result per line, from rsio-loadgen.
    #[arg(long)]
    raw: PathBuf,
    /// Output prefix: writes OUT.json, OUT.md and OUT-*.png.
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
            if !k.placement.is_empty() {
                v["placement"] = json!(k.placement);
                v["workers"] = json!(k.workers);
            }
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
            let plots: [(&str, PlotFn); 4] = [
                ("echo-throughput", plot_echo_throughput),
                ("echo-latency", plot_echo_latency),
                ("broadcast-latency", plot_broadcast_latency),
                ("rooms", rooms::plot_rooms),
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
