//! `rsio-soakplot`: draws the CSV of `scripts/soak` as a PNG: the RSS of the
//! primary and of each worker over time (one line per worker incarnation, kills
//! as dashed vertical lines, restarts as triangles), and below it the sockets
//! of each worker and the connected clients.
//!
//! ```text
//! rsio-soakplot --csv bench/results/soak-DATE.csv --out bench/results/soak-DATE.png \
//!   --font /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
//! ```

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use plotters::prelude::*;

#[derive(Parser)]
struct Cli {
    /// The samples written by scripts/soak.mjs.
    #[arg(long)]
    csv: PathBuf,
    /// The PNG to write.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value = "rsio soak")]
    title: String,
    /// A TTF font for the labels.
    #[arg(long)]
    font: PathBuf,
}

/// The CSV as columns of optional numbers, plus the event column.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn col(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    fn num(&self, row: &[String], name: &str) -> Option<f64> {
        row.get(self.col(name)?)?.parse().ok()
    }
}

fn read(path: &PathBuf) -> Result<Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = match lines.next() {
        Some(h) => h.split(',').map(String::from).collect(),
        None => bail!("{} is empty", path.display()),
    };
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    Ok(Table { header, rows })
}

fn color(i: usize) -> RGBColor {
    [
        RGBColor(0x20, 0x20, 0x20),
        RGBColor(0xd9, 0x48, 0x1c),
        RGBColor(0x1f, 0x5f, 0xbf),
        RGBColor(0x2b, 0x7a, 0x2b),
        RGBColor(0x90, 0x30, 0x90),
    ][i % 5]
}

/// One process: its name, and its RSS (t, MiB) split into incarnations (pids).
struct Proc {
    name: String,
    segments: Vec<Vec<(f64, f64)>>,
    restarts: Vec<(f64, f64)>,
}

fn procs(t: &Table, workers: usize) -> Vec<Proc> {
    let mut out = Vec::new();
    let mut names = vec![("primary".to_string(), "primary".to_string())];
    names.extend((0..workers).map(|i| (format!("worker {i}"), format!("w{i}"))));
    for (name, prefix) in names {
        let (mut segments, mut restarts) = (Vec::<Vec<(f64, f64)>>::new(), Vec::new());
        let mut last_pid = None;
        for row in &t.rows {
            let (Some(x), Some(pid), Some(rss)) = (
                t.num(row, "t_s"),
                t.num(row, &format!("{prefix}_pid")),
                t.num(row, &format!("{prefix}_rss_kib")),
            ) else {
                continue;
            };
            let p = (x, rss / 1024.0);
            if last_pid != Some(pid) {
                if last_pid.is_some() {
                    restarts.push(p);
                }
                segments.push(Vec::new());
                last_pid = Some(pid);
            }
            segments.last_mut().expect("pushed above").push(p);
        }
        out.push(Proc {
            name,
            segments,
            restarts,
        });
    }
    out
}

/// (t, worker) of each `kill wI pid P @Ts` event (T: when it was sent; else the row's time).
fn kills(t: &Table) -> Vec<(f64, usize)> {
    let Some(ev) = t.col("event") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for row in &t.rows {
        let (Some(x), Some(text)) = (t.num(row, "t_s"), row.get(ev)) else {
            continue;
        };
        for item in text.split(';') {
            let Some(rest) = item.trim().strip_prefix("kill w") else {
                continue;
            };
            let mut words = rest.split_whitespace();
            let Some(w) = words.next().and_then(|n| n.parse::<usize>().ok()) else {
                continue;
            };
            let at = words
                .find_map(|w| w.strip_prefix('@')?.strip_suffix('s')?.parse::<f64>().ok())
                .unwrap_or(x);
            out.push((at, w));
        }
    }
    out
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(cli: &Cli, t: &Table) -> DrawResult {
    let workers = (0..)
        .take_while(|i| t.col(&format!("w{i}_pid")).is_some())
        .count();
    let procs = procs(t, workers);
    let kills = kills(t);
    let xs: Vec<f64> = t.rows.iter().filter_map(|r| t.num(r, "t_s")).collect();
    let xmax = xs.iter().copied().fold(1.0f64, f64::max);
    let ymax = procs
        .iter()
        .flat_map(|p| p.segments.iter().flatten().map(|(_, y)| *y))
        .fold(1.0f64, f64::max);

    let root = BitMapBackend::new(&cli.out, (1400, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(560);
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!("{}: RSS per process", cli.title),
            ("sans-serif", 22),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..xmax, 0.0..ymax * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("s")
        .y_desc("RSS (MiB)")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for &(x, w) in &kills {
        let c = color(w + 1);
        chart.draw_series(DashedLineSeries::new(
            vec![(x, 0.0), (x, ymax * 1.15)],
            6,
            4,
            c.mix(0.6).stroke_width(1),
        ))?;
    }
    // Where every client was told to leave.
    let drain = t.col("phase").and_then(|ph| {
        t.rows
            .iter()
            .find(|r| r.get(ph).map(String::as_str) == Some("drain"))
            .and_then(|r| t.num(r, "t_s"))
    });
    if let Some(x) = drain {
        chart
            .draw_series(LineSeries::new(
                vec![(x, 0.0), (x, ymax * 1.15)],
                BLACK.mix(0.4).stroke_width(2),
            ))?
            .label("all clients leave")
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.4).stroke_width(2))
            });
    }
    for (i, p) in procs.iter().enumerate() {
        let c = color(i);
        for (k, seg) in p.segments.iter().enumerate() {
            let s = chart.draw_series(LineSeries::new(seg.clone(), c.stroke_width(2)))?;
            if k == 0 {
                s.label(p.name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            }
        }
        chart.draw_series(
            p.restarts
                .iter()
                .map(|&pt| TriangleMarker::new(pt, 7, c.filled())),
        )?;
    }
    chart
        .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
        .label("SIGKILL (dashed) / new pid (triangle), in the worker's colour")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;

    // Counts.
    let mut series: Vec<(String, Vec<(f64, f64)>)> = (0..workers)
        .map(|i| {
            let pts = t
                .rows
                .iter()
                .filter_map(|r| Some((t.num(r, "t_s")?, t.num(r, &format!("w{i}_sockets"))?)))
                .collect();
            (format!("worker {i} sockets"), pts)
        })
        .collect();
    series.push((
        "clients connected".into(),
        t.rows
            .iter()
            .filter_map(|r| Some((t.num(r, "t_s")?, t.num(r, "clients_connected")?)))
            .collect(),
    ));
    let cmax = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|(_, y)| *y))
        .fold(1.0f64, f64::max);
    let mut chart = ChartBuilder::on(&bottom)
        .caption("sockets per worker, clients", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..xmax, 0.0..cmax * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("s")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let c = if i < workers { color(i + 1) } else { color(0) };
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(1)))?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()?;
    root.present()?;
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let table = read(&cli.csv)?;
    let bytes: &'static [u8] = Box::leak(
        std::fs::read(&cli.font)
            .with_context(|| format!("reading {}", cli.font.display()))?
            .into_boxed_slice(),
    );
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow::anyhow!("{} is not a usable font", cli.font.display()))?;
    draw(&cli, &table).map_err(|e| anyhow::anyhow!("{}: {e}", cli.out.display()))?;
    Ok(())
}
