//! The figures of the JSON result: latency percentiles and CPU per operation.

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::procfs::ProcSample;

pub fn latency(hist: &Histogram<u64>) -> Value {
    if hist.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": hist.value_at_quantile(0.50),
        "p90": hist.value_at_quantile(0.90),
        "p99": hist.value_at_quantile(0.99),
        "p999": hist.value_at_quantile(0.999),
        "max": hist.max(),
        "mean": (hist.mean() * 10.0).round() / 10.0,
    })
}

pub fn per_op_us(cpu_s: f64, ops: u64) -> Value {
    if ops == 0 {
        Value::Null
    } else {
        json!((cpu_s * 1e6 / ops as f64 * 1000.0).round() / 1000.0)
    }
}

/// The kernel's part of the server CPU time between two samples.
pub fn sys_fraction(a: &ProcSample, b: &ProcSample) -> Value {
    let cpu = b.cpu_s - a.cpu_s;
    if cpu <= 0.0 {
        Value::Null
    } else {
        json!(((b.sys_s - a.sys_s) / cpu * 100.0).round() / 100.0)
    }
}
