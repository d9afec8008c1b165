//! `cross-host`: what the shared Redis did during the measured window, from
//! `INFO commandstats` (calls per command) and its process's CPU time.

use std::collections::BTreeMap;

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
};

/// Calls per command (`cmdstat_<name>:calls=N,…`) of the Redis at `addr`
/// (`host:port`), with one plain RESP request.
pub async fn commandstats(addr: &str) -> Result<BTreeMap<String, u64>> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"*2\r\n$4\r\nINFO\r\n$12\r\ncommandstats\r\n")
        .await?;
    let mut reader = BufReader::new(tcp);
    let mut header = String::new();
    reader.read_line(&mut header).await?;
    let len: usize = header
        .strip_prefix('$')
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| anyhow!("INFO answered {header:?}"))?;
    let mut body = vec![0; len];
    reader.read_exact(&mut body).await?;
    let text = String::from_utf8_lossy(&body);
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let Some((name, stats)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        let n = stats
            .split(',')
            .find_map(|kv| kv.strip_prefix("calls="))
            .and_then(|n| n.parse().ok());
        if let Some(n) = n {
            calls.insert(name.to_string(), n);
        }
    }
    // A fresh Redis has no line yet: every count is then 0.
    Ok(calls)
}

/// The calls of each command between two samples, the `INFO` calls of the
/// sampling itself left out, and their sum per broadcast sent.
pub fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, sent: u64) -> Value {
    let per: BTreeMap<&str, u64> = after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, n)| {
            (
                name.as_str(),
                n - before.get(name).copied().unwrap_or(0).min(*n),
            )
        })
        .filter(|(_, n)| *n > 0)
        .collect();
    let total: u64 = per.values().sum();
    json!({
        "redis_commands": per,
        "redis_commands_total": total,
        "redis_commands_per_broadcast": if sent == 0 { Value::Null } else {
            json!((total as f64 / sent as f64 * 1000.0).round() / 1000.0)
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampling_is_left_out_and_the_rest_is_summed_per_broadcast() {
        let before = BTreeMap::from([("xadd".to_string(), 10), ("info".to_string(), 1)]);
        let after = BTreeMap::from([
            ("xadd".to_string(), 30),
            ("xread".to_string(), 20),
            ("info".to_string(), 2),
        ]);
        let v = delta(&before, &after, 20);
        assert_eq!(v["redis_commands"], json!({"xadd": 20, "xread": 20}));
        assert_eq!(v["redis_commands_per_broadcast"], json!(2.0));
    }
}
