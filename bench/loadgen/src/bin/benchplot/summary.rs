//! The medians of each point (server, scenario, mode, placement, workers,
//! clients) over the repetitions of a run.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

/// Order in tables and plots; servers not listed come after.
pub const SERVER_ORDER: [&str; 6] = [
    "rsio",
    "rsio-deflate",
    "node",
    "node-deflate",
    "socketioxide",
    "bare",
];

/// Rank in [`SERVER_ORDER`] (doubled), a variant `rsio-NAME` (rsio run with
/// extra flags, `scripts/bench --variant`) right after rsio.
pub fn server_rank(s: &str) -> usize {
    if s.starts_with("rsio-") {
        return 1;
    }
    2 * SERVER_ORDER
        .iter()
        .position(|x| *x == s)
        .unwrap_or(SERVER_ORDER.len())
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub scenario: String,
    pub mode: String,
    /// `rooms`: `local` or `spread`; `cross-host`: `same-host` or
    /// `cross-host` (empty for the other scenarios).
    pub placement: String,
    /// `rooms`: workers of the cluster; `cross-host`: workers per host (0 for
    /// the other scenarios).
    pub workers: u64,
    pub clients: u64,
    pub rank: usize,
    pub server: String,
}

pub fn median(mut v: Vec<f64>) -> Option<f64> {
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

pub fn field(run: &Value, path: &str) -> Option<f64> {
    let mut v = run;
    for part in path.split('.') {
        v = v.get(part)?;
    }
    v.as_f64()
}

/// Median figures of one point (server × scenario × clients).
#[derive(Clone, Debug, Default)]
pub struct Point {
    pub runs: usize,
    pub failed: usize,
    pub errors: f64,
    pub lost: f64,
    /// `rooms`: deliveries received twice or by a member of another room.
    pub wrong: f64,
    pub fields: BTreeMap<&'static str, f64>,
}

pub const FIELDS: [&str; 21] = [
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
    "server_cpu_us_per_broadcast",
    "server_wakeups_per_broadcast",
    "primary_cpu_us_per_op",
    "primary_share",
    "room_size",
    "workers_reached",
    "redis_cpu_us_per_op",
    "redis_commands_per_broadcast",
];

impl Point {
    pub fn get(&self, f: &str) -> Option<f64> {
        self.fields.get(f).copied()
    }

    /// Operations per second one core of server CPU sustains.
    pub fn per_core(&self) -> Option<f64> {
        self.get("server_cpu_us_per_op")
            .filter(|c| *c > 0.0)
            .map(|c| 1e6 / c)
    }

    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("runs".into(), json!(self.runs));
        m.insert("failed_runs".into(), json!(self.failed));
        m.insert("errors".into(), json!(self.errors));
        m.insert("lost".into(), json!(self.lost));
        if self.wrong > 0.0 {
            m.insert("duplicated_or_misdelivered".into(), json!(self.wrong));
        }
        for (k, v) in &self.fields {
            m.insert(k.replace("latency_us.", "latency_us_"), json!(v));
        }
        if let Some(p) = self.per_core() {
            m.insert("per_core_ops_per_s".into(), json!(p.round()));
        }
        Value::Object(m)
    }
}

pub fn summarize(runs: &[Value]) -> BTreeMap<Key, Point> {
    let mut groups: BTreeMap<Key, Vec<&Value>> = BTreeMap::new();
    for run in runs {
        let s = |k: &str| run.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let server = s("server");
        let key = Key {
            scenario: s("scenario"),
            mode: s("mode"),
            placement: s("placement"),
            workers: run.get("workers").and_then(Value::as_u64).unwrap_or(0),
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
            p.wrong = ok
                .iter()
                .flat_map(|r| [field(r, "duplicates"), field(r, "misdelivered")])
                .flatten()
                .sum::<f64>()
                + 0.0;
            for f in FIELDS {
                if let Some(m) = median(ok.iter().filter_map(|r| field(r, f)).collect()) {
                    p.fields.insert(f, m);
                }
            }
            (key, p)
        })
        .collect()
}
