//! The cluster primary speaks systemd's notify protocol: started with `NOTIFY_SOCKET`, it
//! sends `READY=1` once every worker listens (with a `STATUS=` line counting them),
//! `WATCHDOG=1` every half `WATCHDOG_USEC`, and `STOPPING=1` on SIGTERM, then exits 0.
//! Workers never see `NOTIFY_SOCKET` (nor the watchdog variables).
//!
//! Each test binds a `UnixDatagram` at a temporary path, standing in for systemd, and
//! starts `target/<profile>/examples/interop --cluster --workers 2 --port <random base>`
//! (`RSIO_INTEROP_BIN` overrides the binary; `RSIO_TEST_SERVER_LOG=1` shows its stderr).
//! Every wait is bounded.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixDatagram,
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};

/// How long a cluster may take to send `READY=1` (debug binaries on a loaded machine).
const STARTUP: Duration = Duration::from_secs(15);
/// Upper bound for every other wait.
const STEP: Duration = Duration::from_secs(5);
const WORKERS: usize = 2;
/// The primary's exit status when it cannot bind a port (EX_UNAVAILABLE).
const EXIT_BIND: i32 = 69;

#[path = "support/interop_bin.rs"]
mod interop_bin;
use interop_bin::interop_bin;

/// The socket systemd would listen on; removed on drop.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every datagram received so far, in order.
    received: Vec<String>,
}

static NEXT_SOCKET: AtomicUsize = AtomicUsize::new(0);

impl NotifySocket {
    fn bind() -> NotifySocket {
        let path = std::env::temp_dir().join(format!(
            "rsio-notify-{}-{}.sock",
            std::process::id(),
            NEXT_SOCKET.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let socket =
            UnixDatagram::bind(&path).unwrap_or_else(|e| panic!("binding {}: {e}", path.display()));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set_read_timeout");
        NotifySocket {
            socket,
            path,
            received: Vec::new(),
        }
    }

    /// The next datagram, or `None` after about 50 ms.
    fn recv(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        match self.socket.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                self.received.push(text.clone());
                Some(text)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => panic!("recv on the notify socket: {e}"),
        }
    }

    /// Receives until a datagram has a line equal to `line`; panics after `limit`.
    fn wait_for(&mut self, line: &str, limit: Duration, cluster: &mut Cluster) -> String {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(d) = self.recv() {
                if has_line(&d, line) {
                    return d;
                }
            }
            if let Some(status) = cluster.try_wait() {
                // what was sent just before the exit is still queued
                while let Some(d) = self.recv() {
                    if has_line(&d, line) {
                        return d;
                    }
                }
                panic!(
                    "the primary exited ({status}) before sending {line}; datagrams {:?}; log:\n{}",
                    self.received,
                    cluster.log()
                );
            }
        }
        panic!(
            "no {line} within {limit:?}; datagrams {:?}; log:\n{}",
            self.received,
            cluster.log()
        );
    }

    /// Every datagram that arrives within `period`.
    fn collect_for(&mut self, period: Duration) -> Vec<String> {
        let deadline = Instant::now() + period;
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Some(d) = self.recv() {
                got.push(d);
            }
        }
        got
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn has_line(datagram: &str, line: &str) -> bool {
    datagram.lines().any(|l| l == line)
}

/// A running cluster; SIGKILLed on drop if still running (its workers get SIGTERM from
/// the kernel when the primary dies: PR_SET_PDEATHSIG).
struct Cluster {
    child: Child,
    base: u16,
    log: Arc<Mutex<String>>,
    exit: Option<ExitStatus>,
}

impl Cluster {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().expect("try_wait");
        }
        self.exit
    }

    /// Waits for the primary to exit; panics after `limit`.
    fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the primary did not exit within {limit:?}; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Worker index → pid, from the primary's `worker I (pid P) listening on` lines;
    /// waits (bounded) until every worker has one.
    fn worker_pids(&self) -> Vec<i32> {
        let deadline = Instant::now() + STEP;
        loop {
            let log = self.log();
            let mut pids = vec![None; WORKERS];
            for line in log.lines() {
                if let Some((index, pid)) = parse_worker_line(line) {
                    if index < WORKERS {
                        pids[index] = Some(pid);
                    }
                }
            }
            if pids.iter().all(Option::is_some) {
                return pids.into_iter().flatten().collect();
            }
            assert!(
                Instant::now() < deadline,
                "the primary did not log every worker's pid; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn terminate(&self) {
        kill(self.pid(), Signal::SIGTERM).expect("SIGTERM to the primary");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `worker I (pid P) listening on …` → (I, P).
fn parse_worker_line(line: &str) -> Option<(usize, i32)> {
    let rest = &line[line.find("worker ")? + "worker ".len()..];
    let (index, rest) = rest.split_once(" (pid ")?;
    let (pid, rest) = rest.split_once(')')?;
    if !rest.trim_start().starts_with("listening on") {
        return None;
    }
    Some((index.parse().ok()?, pid.parse().ok()?))
}

/// Starts the cluster with `NOTIFY_SOCKET` pointing at `notify` (plus `env`) and returns
/// it with the `READY=1` datagram. A base port that cannot be bound is replaced.
fn start(notify: &mut NotifySocket, env: &[(&str, &str)]) -> (Cluster, String) {
    let bin = interop_bin();
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build --example interop` (cargo test does), \
         or set RSIO_INTEROP_BIN",
        bin.display()
    );
    let show_log = std::env::var_os("RSIO_TEST_SERVER_LOG").is_some();
    for _attempt in 0..6 {
        let base: u16 = rand::random_range(20_000..(60_000 - WORKERS as u16));
        let mut cmd = Command::new(&bin);
        cmd.args(["--cluster", "--workers", &WORKERS.to_string()])
            .args(["--port", &base.to_string()])
            .env("NOTIFY_SOCKET", &notify.path)
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let log_w = log.clone();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if show_log {
                    eprintln!("[cluster] {line}");
                }
                let mut log = log_w.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut cluster = Cluster {
            child,
            base,
            log,
            exit: None,
        };
        notify.received.clear();
        let deadline = Instant::now() + STARTUP;
        while Instant::now() < deadline {
            if let Some(d) = notify.recv() {
                if has_line(&d, "READY=1") {
                    return (cluster, d);
                }
            }
            if let Some(status) = cluster.try_wait() {
                // let the reader thread catch the last lines
                thread::sleep(Duration::from_millis(50));
                if status.code() == Some(EXIT_BIND) && cluster.log().contains("cannot listen on") {
                    break; // another base
                }
                panic!(
                    "the primary exited ({status}) before READY=1; datagrams {:?}; log:\n{}",
                    notify.received,
                    cluster.log()
                );
            }
        }
        if cluster.try_wait().is_none() {
            panic!(
                "no READY=1 within {STARTUP:?}; datagrams {:?}; log:\n{}",
                notify.received,
                cluster.log()
            );
        }
    }
    panic!("could not bind a free port range in 6 attempts");
}

/// An Engine.IO handshake on `port`: the body of the open packet.
fn handshake(port: u16) -> String {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, STEP)
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream.set_read_timeout(Some(STEP)).unwrap();
    stream.set_write_timeout(Some(STEP)).unwrap();
    stream
        .write_all(
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\
              Host: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .unwrap_or_else(|e| panic!("request to {addr}: {e}"));
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .unwrap_or_else(|e| panic!("response from {addr}: {e}"));
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "handshake on {addr}: {response}"
    );
    response
}

/// The environment of process `pid`.
fn environ(pid: i32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/environ: {e}"));
    raw.split(|&b| b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn has_var(env: &[String], name: &str) -> bool {
    env.iter().any(|v| v.starts_with(&format!("{name}=")))
}

fn exists(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// SIGTERM → `STOPPING=1`, then exit status 0, and no worker left.
fn stop(notify: &mut NotifySocket, cluster: &mut Cluster, workers: &[i32]) {
    cluster.terminate();
    let stopping = notify.wait_for("STOPPING=1", STEP, cluster);
    assert!(
        !has_line(&stopping, "READY=1"),
        "STOPPING=1 together with READY=1: {stopping:?}"
    );
    let status = cluster.wait_exit(STEP * 2);
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status}; log:\n{}",
        cluster.log()
    );
    // the primary reaps its workers before it exits
    for &pid in workers {
        assert!(!exists(pid), "worker pid {pid} still exists");
    }
}

#[test]
fn ready_after_every_worker_listens_then_status_and_stopping() {
    let mut notify = NotifySocket::bind();
    let (mut cluster, ready) = start(&mut notify, &[]);

    // READY=1 comes with the status line counting every worker as up.
    let status = ready
        .lines()
        .find(|l| l.starts_with("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= line in the READY datagram {ready:?}"));
    assert!(
        status.contains(&format!("{WORKERS}/{WORKERS} workers")),
        "{status:?}"
    );
    // Nothing claimed readiness before: earlier datagrams are partial STATUS= lines only.
    let before: Vec<&String> = notify
        .received
        .iter()
        .take(notify.received.len() - 1)
        .collect();
    for d in &before {
        assert!(!has_line(d, "READY=1"), "early READY=1: {d:?}");
        assert!(
            !d.contains(&format!("{WORKERS}/{WORKERS} workers")),
            "all workers reported up before READY=1: {d:?}"
        );
    }
    assert!(
        !notify.received.iter().any(|d| has_line(d, "WATCHDOG=1")),
        "WATCHDOG=1 without WATCHDOG_USEC: {:?}",
        notify.received
    );

    // By then, both workers serve their port.
    for i in 0..WORKERS {
        let port = cluster.base + i as u16;
        let response = handshake(port);
        assert!(
            response.contains("\"sid\""),
            "no Engine.IO open packet on port {port}: {response}"
        );
    }
    // …and the primary logged both as listening before its `ready:` line.
    let workers = cluster.worker_pids();
    let log = cluster.log();
    let ready_at = log
        .find("ready: http://127.0.0.1:")
        .unwrap_or_else(|| panic!("no `ready:` line; log:\n{log}"));
    for (i, pid) in workers.iter().enumerate() {
        let line = format!("worker {i} (pid {pid}) listening on");
        let at = log
            .find(&line)
            .unwrap_or_else(|| panic!("no {line:?}; log:\n{log}"));
        assert!(at < ready_at, "{line:?} after the ready line; log:\n{log}");
    }

    // Only the primary talks to systemd.
    let primary_env = environ(cluster.pid().as_raw());
    assert!(has_var(&primary_env, "NOTIFY_SOCKET"));
    for (i, &pid) in workers.iter().enumerate() {
        let env = environ(pid);
        assert!(
            env.iter().any(|v| v == &format!("RSIO_WORKER_INDEX={i}")),
            "pid {pid} is not worker {i}: {env:?}"
        );
        assert!(
            !has_var(&env, "NOTIFY_SOCKET"),
            "worker {i} has NOTIFY_SOCKET: {env:?}"
        );
    }

    stop(&mut notify, &mut cluster, &workers);
}

#[test]
fn watchdog_pings_every_half_period() {
    let mut notify = NotifySocket::bind();
    let (mut cluster, _ready) = start(&mut notify, &[("WATCHDOG_USEC", "200000")]);
    // every 100 ms: about 10 in a second; ask for a few, the machine is loaded
    let pings = notify
        .collect_for(Duration::from_millis(1000))
        .iter()
        .filter(|d| has_line(d, "WATCHDOG=1"))
        .count();
    assert!(
        pings >= 3,
        "{pings} WATCHDOG=1 in 1 s with WATCHDOG_USEC=200000"
    );
    assert!(
        pings <= 30,
        "{pings} WATCHDOG=1 in 1 s: far more than every 100 ms"
    );
    let workers = cluster.worker_pids();
    for &pid in &workers {
        let env = environ(pid);
        assert!(
            !has_var(&env, "NOTIFY_SOCKET") && !has_var(&env, "WATCHDOG_USEC"),
            "worker pid {pid} got systemd's variables: {env:?}"
        );
    }
    stop(&mut notify, &mut cluster, &workers);
}

#[test]
fn no_watchdog_when_it_is_meant_for_another_pid() {
    let mut notify = NotifySocket::bind();
    let (mut cluster, _ready) = start(
        &mut notify,
        &[("WATCHDOG_USEC", "200000"), ("WATCHDOG_PID", "1")],
    );
    let got = notify.collect_for(Duration::from_millis(600));
    assert!(
        !notify.received.iter().any(|d| has_line(d, "WATCHDOG=1")),
        "WATCHDOG=1 although WATCHDOG_PID is another process: {got:?}"
    );
    let workers = cluster.worker_pids();
    stop(&mut notify, &mut cluster, &workers);
}

impl NotifySocket {
    /// Every datagram that arrives within `period`, with its arrival time.
    fn collect_timed(&mut self, period: Duration) -> Vec<(Instant, String)> {
        let deadline = Instant::now() + period;
        let mut got = Vec::new();
        while Instant::now() < deadline {
            if let Some(d) = self.recv() {
                got.push((Instant::now(), d));
            }
        }
        got
    }
}

/// Arrival times of the `WATCHDOG=1` datagrams among `got`.
fn pings(got: &[(Instant, String)]) -> Vec<Instant> {
    got.iter()
        .filter(|(_, d)| has_line(d, "WATCHDOG=1"))
        .map(|(t, _)| *t)
        .collect()
}

/// `WATCHDOG=1` means health, not a timer: while a worker's event loop is stuck (here
/// SIGSTOP) and not yet replaced, the primary stops pinging; once it has killed and
/// restarted it, pings resume.
#[test]
fn watchdog_pauses_while_a_worker_is_stuck_and_resumes_after_its_restart() {
    let mut notify = NotifySocket::bind();
    let (mut cluster, _ready) = start(&mut notify, &[("WATCHDOG_USEC", "200000")]);
    let workers = cluster.worker_pids();
    let before = pings(&notify.collect_timed(Duration::from_millis(500)));
    assert!(before.len() >= 2, "{} WATCHDOG=1 in 0.5 s", before.len());

    let stopped_at = Instant::now();
    kill(Pid::from_raw(workers[1]), Signal::SIGSTOP).expect("SIGSTOP worker 1");
    let got = notify.collect_timed(Duration::from_secs(6));
    let _ = kill(Pid::from_raw(workers[1]), Signal::SIGCONT);
    let times = pings(&got);

    // The longest silence, from the stop on.
    let mut longest = Duration::ZERO;
    let mut previous = stopped_at;
    for &t in &times {
        longest = longest.max(t.duration_since(previous));
        previous = t;
    }
    let log = cluster.log();
    assert!(
        longest >= Duration::from_millis(600),
        "WATCHDOG=1 never paused while worker 1 was stuck (longest gap {longest:?}, pings \
         every ~100 ms); log:\n{log}"
    );
    assert!(
        log.lines().any(
            |l| l.contains(&format!("killing worker 1 (pid {})", workers[1]))
                && l.contains("no heartbeat")
        ),
        "worker 1 was not killed for its silence; log:\n{log}"
    );
    // Pings resumed once it was replaced: the last second has its share.
    let end = Instant::now();
    let recent = times
        .iter()
        .filter(|t| end.duration_since(**t) < Duration::from_secs(1))
        .count();
    assert!(
        recent >= 3,
        "{recent} WATCHDOG=1 in the last second; longest gap {longest:?}; log:\n{log}"
    );
    assert!(!exists(workers[1]), "the stuck worker still exists");
    let workers = cluster.worker_pids();
    stop(&mut notify, &mut cluster, &workers);
}

/// Pings come from the primary's event loop: none while it is stopped, and no burst
/// of the missed ones when it runs again (a timer thread would keep pinging, a
/// bursting interval would claim the stalled time). Its own stall does not make it
/// kill workers whose heartbeats it could not read meanwhile.
#[test]
fn watchdog_pings_come_from_the_primary_loop_without_a_burst_after_a_stall() {
    let mut notify = NotifySocket::bind();
    let (mut cluster, _ready) = start(&mut notify, &[("WATCHDOG_USEC", "200000")]);
    let workers = cluster.worker_pids();
    let _ = notify.collect_timed(Duration::from_millis(300));

    kill(cluster.pid(), Signal::SIGSTOP).expect("SIGSTOP the primary");
    let during = pings(&notify.collect_timed(Duration::from_millis(3000)));
    kill(cluster.pid(), Signal::SIGCONT).expect("SIGCONT the primary");
    let resumed_at = Instant::now();
    let after = pings(&notify.collect_timed(Duration::from_millis(1500)));
    assert!(
        during.is_empty(),
        "{} WATCHDOG=1 while the primary was stopped",
        during.len()
    );
    let burst = after
        .iter()
        .filter(|t| t.duration_since(resumed_at) < Duration::from_millis(150))
        .count();
    assert!(
        burst <= 2,
        "{burst} WATCHDOG=1 within 150 ms of SIGCONT: the missed pings were sent in a burst"
    );
    assert!(
        after.len() >= 5,
        "{} WATCHDOG=1 in 1.5 s after SIGCONT",
        after.len()
    );
    let log = cluster.log();
    assert!(
        !log.contains("killing worker"),
        "the primary killed workers after its own stall; log:\n{log}"
    );
    for &pid in &workers {
        assert!(exists(pid), "worker pid {pid} is gone; log:\n{log}");
    }
    stop(&mut notify, &mut cluster, &workers);
}
