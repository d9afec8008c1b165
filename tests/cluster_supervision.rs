//! The primary trusts no worker: a worker that sends what does not decode, speaks in
//! another worker's name, addresses a worker that does not exist, or stops
//! heartbeating is killed (through the `Child` the primary spawned, whatever pid it
//! claims) and restarted, while the other worker keeps serving. And a process started
//! with the worker environment but without the primary's sockets on descriptors 3 and 4
//! exits with a clear message.
//!
//! The misbehaving workers are `examples/interop/fake_worker.rs`, selected with
//! `RSIO_INTEROP_FAKE_WORKER` (only the first incarnation of worker 1 is fake). Each
//! cluster runs in its own process group, so that a signal to "pid 0" could never reach
//! the test. `RSIO_INTEROP_BIN` overrides the binary; `RSIO_TEST_SERVER_LOG=1` shows the
//! cluster's stderr. Every wait is bounded.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpStream},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use nix::{sys::signal::kill, unistd::Pid};

/// How long a cluster may take to be ready (debug binaries on a loaded machine).
const STARTUP: Duration = Duration::from_secs(20);
/// Upper bound for every other wait.
const STEP: Duration = Duration::from_secs(10);
const WORKERS: usize = 2;
/// A worker's exit status when descriptors 3 and 4 are not the primary's (EX_USAGE).
const EXIT_NOT_STARTED_BY_PRIMARY: i32 = 64;

#[path = "support/interop_bin.rs"]
mod interop_bin;
use interop_bin::interop_bin;

/// A running cluster; its process group is SIGKILLed on drop.
struct Cluster {
    child: Child,
    base: u16,
    log: Arc<Mutex<String>>,
}

impl Cluster {
    /// Starts `interop --cluster --workers 2` on a random base port with `env`; a
    /// base that cannot be bound is replaced.
    fn start(env: &[(&str, &str)]) -> Cluster {
        let show_log = std::env::var_os("RSIO_TEST_SERVER_LOG").is_some();
        for _attempt in 0..6 {
            let base: u16 = rand::random_range(20_000..(60_000 - WORKERS as u16));
            let mut cmd = Command::new(interop_bin());
            cmd.args(["--cluster", "--workers", &WORKERS.to_string()])
                .args(["--port", &base.to_string()])
                .env_remove("NOTIFY_SOCKET")
                .env_remove("RSIO_WORKER_INDEX")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .process_group(0);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut child = cmd.spawn().expect("spawning the cluster");
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
            let mut cluster = Cluster { child, base, log };
            let deadline = Instant::now() + STARTUP;
            loop {
                if cluster.log().contains("cannot listen on") {
                    break; // another base
                }
                if cluster.log().contains("ready: http://") {
                    return cluster;
                }
                if let Some(status) = cluster.child.try_wait().expect("try_wait") {
                    thread::sleep(Duration::from_millis(50));
                    if cluster.log().contains("cannot listen on") {
                        break;
                    }
                    panic!("the primary exited ({status}); log:\n{}", cluster.log());
                }
                assert!(
                    Instant::now() < deadline,
                    "not ready within {STARTUP:?}; log:\n{}",
                    cluster.log()
                );
                thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not bind a free port range in 6 attempts");
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The first line of the log that contains every one of `parts`; panics after `limit`.
    fn wait_line(&mut self, parts: &[&str], limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return line.to_string();
            }
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!("the primary exited ({status}) before a line with {parts:?}; log:\n{log}");
            }
            assert!(
                Instant::now() < deadline,
                "no line with {parts:?} within {limit:?}; log:\n{log}"
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().expect("try_wait") {
            panic!("the primary exited ({status}); log:\n{}", self.log());
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // The whole group: primary and workers (fake ones included).
        let _ = kill(
            Pid::from_raw(-(self.child.id() as i32)),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.wait();
    }
}

/// An Engine.IO handshake on `port` succeeds.
fn serves(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, STEP) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(STEP));
    let _ = stream.set_write_timeout(Some(STEP));
    if stream
        .write_all(
            b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\n\
              Host: 127.0.0.1\r\nConnection: close\r\n\r\n",
        )
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.starts_with("HTTP/1.1 200") && response.contains("\"sid\"")
}

fn exists(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

/// `... (pid P) ...` → P.
fn pid_in(line: &str) -> i32 {
    let rest = &line[line.find("(pid ").expect("a pid") + 5..];
    rest[..rest.find(')').expect("a pid")]
        .parse()
        .expect("a pid")
}

/// Worker 1 runs `mode` first; the primary must kill it for `reason` and restart it,
/// and stay up, with worker 0 serving throughout.
fn fake_worker_is_killed_and_replaced(mode: &str, reason: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = dir.path().join("fake-done");
    let spec = format!("{mode}:1:{}", marker.display());
    // Ready comes once the real successor of the fake worker 1 listens.
    let mut cluster = Cluster::start(&[("RSIO_INTEROP_FAKE_WORKER", &spec)]);
    assert!(marker.exists(), "the fake worker did not run");
    let killed = cluster.wait_line(&["killing worker 1 (pid", reason], STEP);
    let fake_pid = pid_in(&killed);
    let not_fake = format!("worker 1 (pid {fake_pid})");
    let deadline = Instant::now() + STEP;
    let new_pid = loop {
        let log = cluster.log();
        let fresh = log.lines().find(|l| {
            l.contains("worker 1 (pid") && l.contains("listening on") && !l.contains(&not_fake)
        });
        if let Some(line) = fresh {
            break pid_in(line);
        }
        assert!(
            Instant::now() < deadline,
            "worker 1 was not restarted; log:\n{log}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_ne!(new_pid, fake_pid, "log:\n{}", cluster.log());
    assert!(
        cluster.log().contains("worker died (signal: 9 (SIGKILL))"),
        "the fake worker was not SIGKILLed; log:\n{}",
        cluster.log()
    );
    assert!(!exists(fake_pid), "the fake worker {fake_pid} still runs");
    cluster.assert_running();
    for i in 0..WORKERS {
        assert!(
            serves(cluster.base + i as u16),
            "worker {i} does not serve; log:\n{}",
            cluster.log()
        );
    }
    // The primary keeps running and does not kill the real workers.
    thread::sleep(Duration::from_millis(500));
    cluster.assert_running();
    assert_eq!(
        cluster.log().matches("killing worker").count(),
        1,
        "log:\n{}",
        cluster.log()
    );
}

#[test]
fn a_worker_sending_an_unreadable_frame_is_killed_and_restarted() {
    fake_worker_is_killed_and_replaced("garbage", "unreadable ipc message");
}

#[test]
fn a_worker_speaking_for_another_worker_is_killed_and_restarted() {
    fake_worker_is_killed_and_replaced("spoof", "from = 0, but it is worker 1");
}

#[test]
fn a_worker_answering_a_worker_that_does_not_exist_is_killed_and_restarted() {
    fake_worker_is_killed_and_replaced("bad-recipient", "addressed to worker 999");
}

/// It claims pid 0 (a signal to it would reach the whole process group) and then goes
/// silent: the primary kills the process it spawned, and only that one.
#[test]
fn a_silent_worker_claiming_pid_0_is_killed_through_its_child_handle() {
    fake_worker_is_killed_and_replaced("pid0", "no heartbeat");
}

/// Runs the interop binary as worker 0 by hand, with `setup` arranging its descriptors
/// 3 and 4 in the child; returns its exit code and stderr.
fn run_as_worker(setup: impl Fn() -> std::io::Result<()> + Send + Sync + 'static) -> (i32, String) {
    let mut cmd = Command::new(interop_bin());
    cmd.args(["--cluster", "--workers", "1", "--port", "1"])
        .env("RSIO_WORKER_INDEX", "0")
        .env("RSIO_WORKER_COUNT", "1")
        .env_remove("RSIO_INTEROP_FAKE_WORKER")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: `setup` only calls fcntl, dup2 or close (async-signal-safe) on
    // descriptors prepared before the fork.
    unsafe {
        cmd.pre_exec(setup);
    }
    let mut child = cmd.spawn().expect("spawning the worker");
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + STEP;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a worker without the primary's descriptors kept running");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let log = reader.join().expect("stderr reader");
    (status.code().unwrap_or(-1), log)
}

/// Puts `fd3` on descriptor 3 and `fd4` on 4, inherited across exec (in the child,
/// before exec). Both are first moved above 4, so that neither overwrites the other.
fn place(fd3: i32, fd4: i32) -> std::io::Result<()> {
    // SAFETY: fcntl and dup2 on open descriptors (async-signal-safe).
    unsafe {
        let (a, b) = (
            libc::fcntl(fd3, libc::F_DUPFD, 50),
            libc::fcntl(fd4, libc::F_DUPFD, 50),
        );
        if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[test]
fn a_worker_without_descriptors_3_and_4_exits_with_a_message() {
    let (code, log) = run_as_worker(|| {
        // SAFETY: closing descriptors of the child, which it would not inherit anyway.
        unsafe {
            libc::close(3);
            libc::close(4);
        }
        Ok(())
    });
    assert_eq!(code, EXIT_NOT_STARTED_BY_PRIMARY, "stderr:\n{log}");
    assert!(
        log.contains("descriptor 3 is not open") && log.contains("not by hand"),
        "stderr:\n{log}"
    );
}

#[test]
fn a_worker_with_files_on_descriptors_3_and_4_exits_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = std::fs::File::create(dir.path().join("not-a-socket")).expect("file");
    let fd = file.as_raw_fd();
    let (code, log) = run_as_worker(move || place(fd, fd));
    drop(file);
    assert_eq!(code, EXIT_NOT_STARTED_BY_PRIMARY, "stderr:\n{log}");
    assert!(
        log.contains("descriptor 3 is not a socket"),
        "stderr:\n{log}"
    );
}

#[test]
fn a_worker_with_a_listener_but_a_file_on_descriptor_4_exits_with_a_message() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = std::fs::File::create(dir.path().join("not-a-socket")).expect("file");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let (file_fd, listen_fd) = (file.as_raw_fd(), listener.as_raw_fd());
    let (code, log) = run_as_worker(move || place(listen_fd, file_fd));
    assert_eq!(code, EXIT_NOT_STARTED_BY_PRIMARY, "stderr:\n{log}");
    assert!(
        log.contains("descriptor 4 is not a socket"),
        "stderr:\n{log}"
    );
}
