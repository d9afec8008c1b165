//! The `rooms` scenario in `<out>.md` and `<out>-rooms.png`: per server and
//! placement, server CPU per delivery against the worker count, its ratio to
//! 1 (and 4) workers, the primary's share, and a projection to 16 and 64
//! workers from the fitted cost model (`model.rs`).

use std::{collections::BTreeSet, fmt::Write as _};

use plotters::prelude::*;

use crate::{
    markdown::{fmt_num, fmt_ratio},
    model::{fit, Fit},
    plots::{color, DrawResult, Summary},
    summary::Point,
};

const PLACEMENTS: [&str; 2] = ["local", "spread"];
/// Worker counts the model projects to.
const PROJECTED: [u64; 2] = [16, 64];

/// (server, clients) of every `rooms` point, servers in their usual order.
fn groups(sum: &Summary) -> Vec<(String, u64)> {
    let set: BTreeSet<(usize, String, u64)> = sum
        .keys()
        .filter(|k| k.scenario == "rooms")
        .map(|k| (k.rank, k.server.clone(), k.clients))
        .collect();
    set.into_iter().map(|(_, s, c)| (s, c)).collect()
}

/// The measured points of one server, clients and placement, by workers.
fn measured<'a>(
    sum: &'a Summary,
    server: &str,
    clients: u64,
    placement: &str,
) -> Vec<(u64, &'a Point)> {
    sum.iter()
        .filter(|(k, _)| {
            k.scenario == "rooms"
                && k.server == server
                && k.clients == clients
                && k.placement == placement
        })
        .map(|(k, p)| (k.workers, p))
        .collect()
}

/// The fitted model of one server: its worker processes and its primary.
struct Model {
    worker: Fit,
    primary: Fit,
    /// Members per room (the spread placement reaches min(W, this) workers).
    room_size: f64,
}

impl Model {
    fn of(sum: &Summary, server: &str, clients: u64) -> Option<Model> {
        let mut worker = Vec::new();
        let mut primary = Vec::new();
        let mut room_size = 0.0f64;
        for placement in PLACEMENTS {
            for (w, p) in measured(sum, server, clients, placement) {
                let (Some(cpu), Some(share), Some(m)) = (
                    p.get("server_cpu_us_per_op"),
                    p.get("primary_share"),
                    p.get("workers_reached"),
                ) else {
                    continue;
                };
                worker.push((m, w as f64, cpu * (1.0 - share)));
                primary.push((m, w as f64, cpu * share));
                room_size = room_size.max(p.get("room_size").unwrap_or(0.0));
            }
        }
        Some(Model {
            worker: fit(&worker)?,
            primary: fit(&primary)?,
            room_size,
        })
    }

    /// Workers a broadcast reaches at `w` workers.
    fn reached(&self, placement: &str, w: f64) -> f64 {
        if placement == "local" {
            1.0
        } else {
            w.min(self.room_size.round().max(1.0))
        }
    }

    /// (CPU µs per delivery, the primary's share of it); a side whose fit
    /// extrapolates below zero counts as zero.
    fn at(&self, placement: &str, w: f64) -> (f64, f64) {
        let m = self.reached(placement, w);
        let (wk, pr) = (
            self.worker.at(m, w).max(0.0),
            self.primary.at(m, w).max(0.0),
        );
        let total = wk + pr;
        (total, if total > 0.0 { pr / total } else { 0.0 })
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.0}%", v * 100.0))
        .unwrap_or_else(|| "–".into())
}

/// The `rooms` section of `<out>.md` (empty if the run has no such point).
pub fn markdown(sum: &Summary) -> String {
    let groups = groups(sum);
    if groups.is_empty() {
        return String::new();
    }
    let mut md =
        String::from("## rooms: small rooms over W workers, every server process on one core\n\n");
    md.push_str(
        "C clients in N rooms (one sender per room, R broadcasts/s in all) over a cluster of W \
         workers, the primary and every worker pinned to one CPU, the load generator on \
         another, so the CPU per operation stays comparable as W grows. *local*: every room's \
         members on one worker; *spread*: a room of k members over min(W, k) workers. *CPU \
         µs/delivery*: all server processes (schedstat, ns) over the deliveries of the \
         window; *primary's share*: the primary's part of it; *wake-ups/broadcast*: times a \
         server thread was scheduled in (schedstat), per broadcast sent: below 1, a process \
         handles several broadcasts per wake-up and pays its fixed cost (context switch, \
         cold caches, a turn of the event loop) once for them. Every member must get every \
         broadcast of its room exactly once (*lost*: missing; duplicates and deliveries of \
         another room make the run fail).\n\n\
         **Model.** A broadcast costs a per member it is delivered to, b per worker it reaches \
         (the relay's write, that worker's wake-up, decoding and room lookup) and c per worker \
         in the cluster whether it has members or not (a relay that floods every worker, \
         workers that look up a room they do not hold, W processes sharing one core). Per \
         delivery, rooms being of one size k: CPU = a + b·m + c·W, with m the workers \
         reached (1 local, min(W, k) spread) and b, c per broadcast ÷ k. a, b, c are fitted by \
         least squares over every measured W and both placements of a server, separately for \
         the worker processes (server CPU − the primary's) and for the primary; the rows \
         *16 (model)* and *64 (model)* are the sum of the two fits there (a side that \
         extrapolates below zero counted as zero). A projection is only as good as the c \
         term: it assumes nothing else changes with W.\n\n",
    );
    for (server, clients) in &groups {
        let model = Model::of(sum, server, *clients);
        for placement in PLACEMENTS {
            let rows = measured(sum, server, *clients, placement);
            if rows.is_empty() {
                continue;
            }
            let _ = writeln!(md, "### {server}, {placement} (C={clients})\n");
            let _ = writeln!(
                md,
                "| W | workers reached | deliveries/s | CPU µs/delivery | × W=1 | × W=4 | primary's share | primary µs/delivery | wake-ups/broadcast | p50 µs | p99 µs | lost / expected | runs |"
            );
            let _ = writeln!(md, "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
            let cpu_at = |w: u64| {
                rows.iter()
                    .find(|(x, _)| *x == w)
                    .and_then(|(_, p)| p.get("server_cpu_us_per_op"))
            };
            for (w, p) in &rows {
                let cpu = p.get("server_cpu_us_per_op");
                let failed = if p.failed > 0 || p.errors > 0.0 || p.wrong > 0.0 {
                    format!(
                        " ({} failed, {} errors, {} duplicated/misdelivered)",
                        p.failed, p.errors, p.wrong
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    md,
                    "| {w} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {}{} |",
                    fmt_num(p.get("workers_reached")),
                    fmt_num(p.get("ops_per_s")),
                    fmt_num(cpu),
                    fmt_ratio(cpu, cpu_at(1)),
                    fmt_ratio(cpu, cpu_at(4)),
                    pct(p.get("primary_share")),
                    fmt_num(p.get("primary_cpu_us_per_op")),
                    fmt_num(p.get("server_wakeups_per_broadcast")),
                    fmt_num(p.get("latency_us.p50")),
                    fmt_num(p.get("latency_us.p99")),
                    p.lost,
                    fmt_num(p.get("expected")),
                    p.runs,
                    failed
                );
            }
            if let Some(m) = &model {
                if rows.iter().map(|(w, _)| *w).max().unwrap_or(0) < 4 {
                    md.push_str("| *fewer than 4 workers measured: the rows below extrapolate far (a smoke test, not a projection)* |||||||||||||\n");
                }
                for w in PROJECTED {
                    let (cpu, share) = m.at(placement, w as f64);
                    let _ = writeln!(
                        md,
                        "| {w} (model) | {} | – | {} | {} | {} | {} | {} | – | – | – | – | – |",
                        fmt_num(Some(m.reached(placement, w as f64))),
                        fmt_num(Some(cpu)),
                        fmt_ratio(Some(cpu), cpu_at(1)),
                        fmt_ratio(Some(cpu), cpu_at(4)),
                        pct(Some(share)),
                        fmt_num(Some(cpu * share)),
                    );
                }
            }
            md.push('\n');
        }
    }
    md.push_str(&floor_markdown(sum, &groups));
    md.push_str("### rooms model (µs per delivery)\n\n| server | C | side | a | b (per worker reached) | c (per worker) | points | max residual |\n|---|--:|---|--:|--:|--:|--:|--:|\n");
    for (server, clients) in &groups {
        match Model::of(sum, server, *clients) {
            Some(m) => {
                for (side, f) in [("workers", m.worker), ("primary", m.primary)] {
                    let _ = writeln!(
                        md,
                        "| {server} | {clients} | {side} | {:.3} | {:.3} | {:.3} | {} | {:.3} |",
                        f.coef[0], f.coef[1], f.coef[2], f.points, f.max_residual
                    );
                }
            }
            None => {
                let _ = writeln!(
                    md,
                    "| {server} | {clients} | – | – | – | – | – | too few points to tell the terms apart |"
                );
            }
        }
    }
    md.push('\n');
    md
}

/// CPU per delivery of `server`'s local placement at `w` workers.
fn local_cpu(sum: &Summary, server: &str, clients: u64, w: u64) -> Option<f64> {
    measured(sum, server, clients, "local")
        .into_iter()
        .find(|(x, _)| *x == w)
        .and_then(|(_, p)| p.get("server_cpu_us_per_op"))
}

/// rsio's local placement beside the floor (`bare`: W copies of a bare
/// server on the same core), W by W; empty without bare points.
fn floor_markdown(sum: &Summary, groups: &[(String, u64)]) -> String {
    let mut md = String::new();
    for (server, clients) in groups {
        if server != "bare" {
            continue;
        }
        let rsio = measured(sum, "rsio", *clients, "local");
        if rsio.is_empty() {
            continue;
        }
        let _ = writeln!(
            md,
            "### rsio, local, beside the floor (C={clients})\n\n\
             *bare*: W copies of `rsio-bare-echo` on the same core, each holding its own rooms \
             (no cluster, no relay, nothing shared): what splitting the same load over W \
             processes on one core costs on this machine, whatever the server. Measured \
             right after rsio at each W.\n\n\
             | W | rsio µs/delivery | bare µs/delivery | rsio ÷ bare | rsio × W=1 | bare × W=1 |\n\
             |--:|--:|--:|--:|--:|--:|"
        );
        for (w, _) in &rsio {
            let (r, b) = (
                local_cpu(sum, "rsio", *clients, *w),
                local_cpu(sum, "bare", *clients, *w),
            );
            let _ = writeln!(
                md,
                "| {w} | {} | {} | {} | {} | {} |",
                fmt_num(r),
                fmt_num(b),
                fmt_ratio(r, b),
                fmt_ratio(r, local_cpu(sum, "rsio", *clients, 1)),
                fmt_ratio(b, local_cpu(sum, "bare", *clients, 1)),
            );
        }
        md.push('\n');
    }
    md
}

/// The issue's `rooms` targets for rsio: (target, this run, met).
pub fn targets(sum: &Summary) -> Vec<(String, String, Option<bool>)> {
    let mut out = Vec::new();
    for (server, clients) in groups(sum) {
        if server != "rsio" {
            continue;
        }
        for (placement, base) in [("local", 1), ("spread", 4)] {
            let rows = measured(sum, &server, clients, placement);
            let at = |w: u64| rows.iter().find(|(x, _)| *x == w).map(|(_, p)| *p);
            let (Some(hi), Some(lo)) = (at(8), at(base)) else {
                continue;
            };
            let (a, b) = (
                hi.get("server_cpu_us_per_op"),
                lo.get("server_cpu_us_per_op"),
            );
            let clean = hi.lost + lo.lost + hi.wrong + lo.wrong == 0.0;
            out.push((
                format!("rooms {placement}: CPU per delivery at 8 workers ≤ 1.15× at {base} (C={clients})"),
                format!("{} µs vs {} µs = {}", fmt_num(a), fmt_num(b), fmt_ratio(a, b)),
                a.zip(b).map(|(a, b)| a / b <= 1.15 && clean),
            ));
        }
        // Not the target: how much of rsio's growth from 1 to 8
        // workers is its own, the floor's growth divided out.
        let growth = |s: &str| {
            local_cpu(sum, s, clients, 8)
                .zip(local_cpu(sum, s, clients, 1))
                .map(|(a, b)| a / b)
        };
        if let (Some(r), Some(b)) = (growth("rsio"), growth("bare")) {
            out.push((
                format!("rooms local, for reference: rsio's growth from 1 to 8 workers over the floor's (C={clients})"),
                format!("rsio {r:.2}×, bare {b:.2}×: {:.2}×", r / b),
                None,
            ));
        }
    }
    out
}

/// `<out>-rooms.png`: CPU per delivery and the primary's share against W,
/// measured (solid) and modelled up to 64 workers (dashed).
pub fn plot_rooms(path: &str, sum: &Summary) -> DrawResult {
    let groups = groups(sum);
    if groups.is_empty() {
        return Ok(());
    }
    struct Line {
        name: String,
        style: ShapeStyle,
        measured: Vec<(f64, f64, f64)>,
        model: Vec<(f64, f64, f64)>,
    }
    let mut lines = Vec::new();
    for (server, clients) in &groups {
        let model = Model::of(sum, server, *clients);
        for placement in PLACEMENTS {
            let rows = measured(sum, server, *clients, placement);
            if rows.is_empty() {
                continue;
            }
            let base = color(server);
            let style = if placement == "local" {
                base.stroke_width(2)
            } else {
                base.mix(0.55).stroke_width(2)
            };
            let label = if groups.len() > server_count(&groups) {
                format!("{server} {placement} C={clients}")
            } else {
                format!("{server} {placement}")
            };
            lines.push(Line {
                name: label,
                style,
                measured: rows
                    .iter()
                    .filter_map(|(w, p)| {
                        let cpu = p.get("server_cpu_us_per_op")?;
                        Some((
                            *w as f64,
                            cpu,
                            p.get("primary_share").unwrap_or(0.0) * 100.0,
                        ))
                    })
                    .collect(),
                model: model
                    .as_ref()
                    .map(|m| {
                        (0..=6)
                            .map(|e| {
                                let w = f64::from(1u32 << e);
                                let (cpu, share) = m.at(placement, w);
                                (w, cpu, share * 100.0)
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
    }
    let root = BitMapBackend::new(path, (1400, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let (l, r) = root.split_horizontally(700);
    type Pick = fn(&(f64, f64, f64)) -> f64;
    let panels: [(_, &str, &str, Pick); 2] = [
        (
            &l,
            "rooms: server CPU µs per delivery",
            "µs per delivery",
            |p| p.1,
        ),
        (
            &r,
            "rooms: the primary's share of it (%)",
            "% of server CPU",
            |p| p.2,
        ),
    ];
    for (area, caption, y_desc, pick) in panels {
        let ymax = lines
            .iter()
            .flat_map(|l| l.measured.iter().chain(&l.model).map(pick))
            .fold(1.0f64, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(70)
            // x is log2(W), labelled with W at the powers of two.
            .build_cartesian_2d(-0.3f64..6.3, 0.0..ymax * 1.15)?;
        chart
            .configure_mesh()
            .x_labels(7)
            .x_label_formatter(&|x| {
                let e = x.round();
                if (x - e).abs() < 0.01 && (0.0..=6.0).contains(&e) {
                    format!("{}", 1u32 << e as u32)
                } else {
                    String::new()
                }
            })
            .y_label_formatter(&|v| format!("{v:.0}"))
            .x_desc("workers (W), measured: solid; model: dashed")
            .y_desc(y_desc)
            .draw()?;
        for line in &lines {
            let style = line.style;
            let pts: Vec<(f64, f64)> = line
                .measured
                .iter()
                .map(|p| (p.0.log2(), pick(p)))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), style))?
                .label(line.name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, style.filled())))?;
            let model: Vec<(f64, f64)> = line.model.iter().map(|p| (p.0.log2(), pick(p))).collect();
            chart.draw_series(DashedLineSeries::new(model, 6, 4, style.stroke_width(1)))?;
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

fn server_count(groups: &[(String, u64)]) -> usize {
    groups.iter().map(|(s, _)| s).collect::<BTreeSet<_>>().len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{server_rank, Key};

    /// A summary of rooms points on an exact model: workers
    /// 1 + 0.2·m + 0.05·W µs, primary 0.1·W µs per delivery.
    fn summary() -> Summary {
        let mut sum = Summary::new();
        for placement in PLACEMENTS {
            for w in [1u64, 2, 4, 8] {
                let m = if placement == "local" {
                    1.0
                } else {
                    (w as f64).min(5.0)
                };
                let worker = 1.0 + 0.2 * m + 0.05 * w as f64;
                let primary = 0.1 * w as f64;
                let mut p = Point {
                    runs: 1,
                    ..Default::default()
                };
                for (f, v) in [
                    ("server_cpu_us_per_op", worker + primary),
                    ("primary_share", primary / (worker + primary)),
                    ("workers_reached", m),
                    ("room_size", 5.0),
                ] {
                    p.fields.insert(f, v);
                }
                let key = Key {
                    scenario: "rooms".into(),
                    mode: "cluster".into(),
                    placement: placement.into(),
                    workers: w,
                    clients: 1000,
                    rank: server_rank("rsio"),
                    server: "rsio".into(),
                };
                sum.insert(key, p);
            }
        }
        sum
    }

    #[test]
    fn projects_from_both_sides_of_the_fit() {
        let sum = summary();
        let m = Model::of(&sum, "rsio", 1000).unwrap();
        let (cpu, share) = m.at("spread", 64.0);
        let (worker, primary) = (1.0 + 0.2 * 5.0 + 0.05 * 64.0, 0.1 * 64.0);
        assert!((cpu - (worker + primary)).abs() < 1e-6, "{cpu}");
        assert!(
            (share - primary / (worker + primary)).abs() < 1e-6,
            "{share}"
        );
        let (cpu, _) = m.at("local", 16.0);
        assert!((cpu - (1.2 + 0.8 + 1.6)).abs() < 1e-6, "{cpu}");
    }

    #[test]
    fn tables_and_targets() {
        let sum = summary();
        let md = markdown(&sum);
        assert!(md.contains("### rsio, local (C=1000)"), "{md}");
        assert!(md.contains("### rsio, spread (C=1000)"), "{md}");
        assert!(md.contains("| 64 (model) | 5.00 |"), "{md}");
        assert!(!md.contains("extrapolate far"), "{md}");
        // W=8 local: 1.2 + 0.4 + 0.8 = 2.4 against 1.25 + 0.1 = 1.35 at W=1.
        assert!(md.contains("| 8 | 1.00 | – | 2.40 | 1.78× |"), "{md}");
        let t = targets(&sum);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].2, Some(false));
        assert!(t[0].1.ends_with("1.78×"), "{:?}", t[0]);
    }

    #[test]
    fn rsio_beside_the_floor() {
        let mut sum = summary();
        // The floor grows from 1.0 to 1.6 µs: rsio's 2.40 / 1.35 = 1.78×
        // over the floor's 1.60× is 1.11×.
        for (w, cpu) in [(1u64, 1.0), (8, 1.6)] {
            let mut p = Point {
                runs: 1,
                ..Default::default()
            };
            p.fields.insert("server_cpu_us_per_op", cpu);
            let key = Key {
                scenario: "rooms".into(),
                mode: "cluster".into(),
                placement: "local".into(),
                workers: w,
                clients: 1000,
                rank: server_rank("bare"),
                server: "bare".into(),
            };
            sum.insert(key, p);
        }
        let md = markdown(&sum);
        assert!(
            md.contains("### rsio, local, beside the floor (C=1000)"),
            "{md}"
        );
        assert!(
            md.contains("| 8 | 2.40 | 1.60 | 1.50× | 1.78× | 1.60× |"),
            "{md}"
        );
        assert!(md.contains("| 2 | 1.50 | – | – | 1.11× | – |"), "{md}");
        let t = targets(&sum);
        assert_eq!(t.len(), 3);
        assert_eq!(t[2].2, None);
        assert!(t[2].1.ends_with("1.11×"), "{:?}", t[2]);
    }
}
