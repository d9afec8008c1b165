//! Server CPU and RSS from /proc, with every descendant process (a cluster's
//! workers), and the load generator's own CPU.

/// `/proc` accounts CPU time in USER_HZ ticks, 100 per second on Linux.
const TICKS_PER_S: f64 = 100.0;

/// (utime, stime) of a process, in ticks.
pub fn proc_cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces): state is the
    // first, utime the 12th and stime the 13th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut f = rest.split_ascii_whitespace().skip(11);
    let utime: u64 = f.next()?.parse().ok()?;
    let stime: u64 = f.next()?.parse().ok()?;
    Some((utime, stime))
}

/// CPU time of a process in nanoseconds: the sum of the `sum_exec_runtime`
/// of its threads (`/proc/<pid>/task/*/schedstat`). The `stat` ticks are
/// 10 ms apart, too coarse for a server that uses a few % of a core; threads
/// that exited are missing here, which the servers measured (long-lived
/// threads) do not have. `None` if the kernel has no schedstat.
pub fn proc_cpu_ns(pid: u32) -> Option<u64> {
    proc_schedstat(pid).map(|(ns, _)| ns)
}

/// (CPU ns, times scheduled in) of a process, summed over its threads from
/// `schedstat` (fields 1 and 3). The second is the number of wake-ups: a
/// server that handles several messages per wake-up pays its fixed cost
/// (context switch, cold caches, the event loop's turn) once for them.
pub fn proc_schedstat(pid: u32) -> Option<(u64, u64)> {
    let mut total = (0u64, 0u64);
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let mut f = stat.split_ascii_whitespace();
        total.0 += f.next()?.parse::<u64>().ok()?;
        total.1 += f.nth(1).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    }
    Some(total)
}

fn proc_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_ascii_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn with_descendants(roots: &[u32]) -> Vec<u32> {
    let mut all = Vec::new();
    let mut stack = roots.to_vec();
    while let Some(pid) = stack.pop() {
        if all.contains(&pid) {
            continue;
        }
        all.push(pid);
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for task in tasks.flatten() {
                if let Ok(children) = std::fs::read_to_string(task.path().join("children")) {
                    stack.extend(
                        children
                            .split_ascii_whitespace()
                            .filter_map(|c| c.parse::<u32>().ok()),
                    );
                }
            }
        }
    }
    all
}

#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// Server CPU seconds (all processes), user + system.
    pub cpu_s: f64,
    /// The same CPU time from schedstat, in nanoseconds (ticks × 1e7 where
    /// a process has no schedstat).
    pub cpu_ns: u64,
    /// Times a server thread was scheduled in (schedstat), all processes.
    pub wakeups: u64,
    /// The system (kernel) part of `cpu_s`.
    pub sys_s: f64,
    /// Server RSS bytes (all processes).
    pub rss: u64,
    pub processes: usize,
    /// This process's CPU seconds.
    pub self_cpu_s: f64,
}

pub fn sample(pids: &[u32]) -> ProcSample {
    let all = with_descendants(pids);
    let mut s = ProcSample {
        processes: all.len(),
        ..Default::default()
    };
    for pid in all {
        let (user, sys) = proc_cpu_ticks(pid).unwrap_or_default();
        s.cpu_s += (user + sys) as f64 / TICKS_PER_S;
        let (ns, wakeups) = proc_schedstat(pid).unwrap_or(((user + sys) * 10_000_000, 0));
        s.cpu_ns += ns;
        s.wakeups += wakeups;
        s.sys_s += sys as f64 / TICKS_PER_S;
        s.rss += proc_rss_bytes(pid).unwrap_or(0);
    }
    let (user, sys) = proc_cpu_ticks(std::process::id()).unwrap_or_default();
    s.self_cpu_s = (user + sys) as f64 / TICKS_PER_S;
    s
}
