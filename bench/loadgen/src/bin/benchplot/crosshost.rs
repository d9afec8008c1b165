//! The `cross-host` scenario in `<out>.md`: two hosts on one Redis, per server,
//! hop (receivers on the senders' host or on the other one) and workers per
//! host: server CPU per delivery (both hosts), Redis's CPU per delivery and
//! the Redis commands per broadcast.

use std::fmt::Write as _;

use crate::{markdown::fmt_num, plots::Summary};

pub fn markdown(sum: &Summary) -> String {
    let rows: Vec<_> = sum
        .iter()
        .filter(|(k, _)| k.scenario == "cross-host")
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "## cross-host (two hosts on one redis-server)\n\n\
         Each host is a cluster of *W* workers, every worker a member of the Redis cluster \
         (rsio `--redis`, Node `@socket.io/redis-streams-adapter`); rsio's primary is its \
         host's one reader of the stream (Node's workers each read it); both hosts and Redis \
         on CPU 0. The senders are on host A; *same-host*: the receivers too (on every worker of \
         A), *cross-host*: the receivers on host B. Server CPU is both hosts' together; \
         Redis's CPU and its commands (`INFO commandstats`, the sampling left out) are apart.\n\n\
         | server | hop | W per host | clients | measured deliveries/s | server CPU µs/delivery | Redis CPU µs/delivery | Redis commands/broadcast | p50 | p99 | lost / expected | runs |\n\
         |---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|\n",
    );
    for (k, p) in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} | {} |",
            k.server,
            k.placement,
            k.workers,
            k.clients,
            fmt_num(p.get("ops_per_s")),
            fmt_num(p.get("server_cpu_us_per_op")),
            fmt_num(p.get("redis_cpu_us_per_op")),
            fmt_num(p.get("redis_commands_per_broadcast")),
            fmt_num(p.get("latency_us.p50")),
            fmt_num(p.get("latency_us.p99")),
            p.lost,
            fmt_num(p.get("expected")),
            p.runs,
        );
    }
    md.push('\n');
    md
}
