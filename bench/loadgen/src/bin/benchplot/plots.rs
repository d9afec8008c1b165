//! The PNG plots: echo throughput and latency against clients, broadcast
//! latency percentiles.

use std::collections::BTreeMap;

use plotters::prelude::*;

use crate::summary::{Key, Point};

pub fn color(server: &str) -> RGBColor {
    match server {
        "rsio" => RGBColor(0xd9, 0x48, 0x1c),
        "node" => RGBColor(0x2b, 0x7a, 0x2b),
        "socketioxide" => RGBColor(0x1f, 0x5f, 0xbf),
        "bare" => RGBColor(0x70, 0x70, 0x70),
        // `scripts/bench --deflate`: the same hue, lighter.
        "rsio-deflate" => RGBColor(0xf0, 0x98, 0x70),
        "node-deflate" => RGBColor(0x80, 0xc0, 0x80),
        _ => RGBColor(0x90, 0x30, 0x90),
    }
}

pub type Points = Vec<(f64, f64)>;
pub type Series = Vec<(String, Points)>;
pub type Summary = BTreeMap<Key, Point>;
pub type PlotFn = fn(&str, &Summary) -> DrawResult;

/// Per server, (clients, value) of `scenario` for a figure.
pub fn series(
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

pub type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

pub fn line_chart<DB: DrawingBackend>(
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

pub fn plot_echo_throughput(path: &str, sum: &BTreeMap<Key, Point>) -> DrawResult {
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

pub fn plot_echo_latency(path: &str, sum: &BTreeMap<Key, Point>) -> DrawResult {
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
pub fn plot_broadcast_latency(path: &str, sum: &BTreeMap<Key, Point>) -> DrawResult {
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
