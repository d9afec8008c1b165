//! The primary's listeners outlive it through systemd's descriptor store: started
//! with `NOTIFY_SOCKET`, it sends each listener with `FDSTORE=1` and
//! `FDNAME=port-<n>`; started again with them (`LISTEN_FDS`, `LISTEN_PID`,
//! `LISTEN_FDNAMES`, descriptors from 3), it serves them without binding, and a
//! connection made while no primary ran is served.
//!
//! A `UnixDatagram` at a temporary path stands in for systemd: it records the
//! datagrams with their SCM_RIGHTS descriptors and hands them back to the second
//! run, as systemd would. The test's copies keep the ports bound throughout, so
//! the second primary could not bind them (it binds without SO_REUSEPORT): it must
//! take them. Every wait is bounded.

use std::{
    io::{BufRead, BufReader, IoSliceMut, Read, Write},
    net::{SocketAddr, TcpStream},
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{net::UnixDatagram, process::CommandExt},
    },
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use nix::{
    cmsg_space,
    sys::signal::{kill, Signal},
    sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr},
    unistd::Pid,
};

const STARTUP: Duration = Duration::from_secs(15);
const STEP: Duration = Duration::from_secs(5);
const WORKERS: usize = 2;

#[path = "support/interop_bin.rs"]
mod interop_bin;
use interop_bin::interop_bin;

/// What the fake systemd received: datagram texts, and the stored descriptors by name.
#[derive(Default)]
struct Received {
    texts: Vec<String>,
    stored: Vec<(String, OwnedFd)>,
}

struct FakeSystemd {
    socket: UnixDatagram,
    path: PathBuf,
    got: Received,
}

impl FakeSystemd {
    fn bind() -> FakeSystemd {
        let path = std::env::temp_dir().join(format!("rsio-fdstore-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).expect("bind the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        FakeSystemd {
            socket,
            path,
            got: Received::default(),
        }
    }

    /// One datagram with its descriptors, if one comes within the read timeout.
    fn recv(&mut self) -> Option<String> {
        let mut buf = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut buf)];
        let mut space = cmsg_space!([RawFd; 4]);
        let msg = match recvmsg::<UnixAddr>(
            self.socket.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(m) => m,
            Err(nix::errno::Errno::EAGAIN) => return None,
            Err(e) => panic!("recvmsg: {e}"),
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs().expect("cmsgs") {
            if let ControlMessageOwned::ScmRights(rights) = c {
                // SAFETY: received with SCM_RIGHTS: new descriptors of this process.
                fds.extend(
                    rights
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        let n = msg.bytes;
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.lines().any(|l| l == "FDSTORE=1") {
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("FDNAME="))
                .unwrap_or("stored")
                .to_string();
            assert_eq!(fds.len(), 1, "one descriptor per FDSTORE=1: {text:?}");
            self.got
                .stored
                .extend(fds.into_iter().map(|fd| (name.clone(), fd)));
        }
        self.got.texts.push(text.clone());
        Some(text)
    }

    fn wait_until(&mut self, what: &str, cluster: &mut Cluster, done: impl Fn(&Received) -> bool) {
        let deadline = Instant::now() + STARTUP;
        while !done(&self.got) {
            self.recv();
            if let Ok(Some(status)) = cluster.child.try_wait() {
                while self.recv().is_some() {}
                if done(&self.got) {
                    return;
                }
                panic!(
                    "the primary exited ({status}) before {what}; datagrams {:?}; log:\n{}",
                    self.got.texts,
                    cluster.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {STARTUP:?}; datagrams {:?}; log:\n{}",
                self.got.texts,
                cluster.log()
            );
        }
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Cluster {
    child: Child,
    log: Arc<Mutex<String>>,
}

impl Cluster {
    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// SIGTERM, then a bounded wait for its exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + STEP * 2;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the primary did not exit; log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the primary through `sh` (so that `LISTEN_PID` can be its own pid, as
/// systemd sets it), with `fds` on descriptors 3, 4, … when given.
fn spawn(notify: &FakeSystemd, base: u16, fds: &[(String, OwnedFd)]) -> Cluster {
    let bin = interop_bin();
    assert!(
        bin.exists(),
        "{} not found: cargo build --example interop",
        bin.display()
    );
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c");
    if fds.is_empty() {
        cmd.arg(r#"exec "$0" "$@""#);
    } else {
        cmd.arg(r#"LISTEN_PID=$$ exec "$0" "$@""#);
        let names: Vec<&str> = fds.iter().map(|(n, _)| n.as_str()).collect();
        cmd.env("LISTEN_FDS", fds.len().to_string())
            .env("LISTEN_FDNAMES", names.join(":"));
    }
    cmd.arg(&bin)
        .args(["--cluster", "--workers", &WORKERS.to_string()])
        .args(["--port", &base.to_string()])
        .env("NOTIFY_SOCKET", &notify.path)
        .env_remove("WATCHDOG_USEC")
        .env_remove("LISTEN_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if fds.is_empty() {
        cmd.env_remove("LISTEN_FDS").env_remove("LISTEN_FDNAMES");
    }
    // Out of the way of 3.. first, so that placing one never overwrites another.
    let high: Vec<RawFd> = fds
        .iter()
        .map(|(_, fd)| {
            // SAFETY: duplicates a descriptor we own; the copy is closed after the spawn.
            let d = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 100) };
            assert!(d >= 0, "F_DUPFD");
            d
        })
        .collect();
    let placed = high.clone();
    // SAFETY: only dup2 (async-signal-safe) in the child, no allocation.
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in placed.iter().enumerate() {
                if libc::dup2(fd, 3 + i as RawFd) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn the primary");
    for fd in high {
        // SAFETY: our own copy, made above.
        unsafe { libc::close(fd) };
    }
    let stderr = child.stderr.take().unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let log_w = log.clone();
    let show = std::env::var_os("RSIO_TEST_SERVER_LOG").is_some();
    thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if show {
                eprintln!("[cluster] {line}");
            }
            let mut log = log_w.lock().unwrap_or_else(|e| e.into_inner());
            log.push_str(&line);
            log.push('\n');
        }
    });
    Cluster { child, log }
}

fn handshake_request(port: u16) -> TcpStream {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, STEP).expect("connect");
    stream.set_read_timeout(Some(STARTUP)).unwrap();
    stream
        .write_all(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .expect("request");
    stream
}

fn response(mut stream: TcpStream) -> String {
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    text
}

#[test]
fn listeners_are_stored_and_taken_back_so_a_restart_never_closes_a_port() {
    let mut systemd = FakeSystemd::bind();
    let base: u16 = rand::random_range(20_000..(60_000 - WORKERS as u16));

    let mut first = spawn(&systemd, base, &[]);
    systemd.wait_until("READY=1 and every listener stored", &mut first, |got| {
        got.stored.len() == WORKERS && got.texts.iter().any(|t| t.lines().any(|l| l == "READY=1"))
    });
    let mut names: Vec<String> = systemd.got.stored.iter().map(|(n, _)| n.clone()).collect();
    names.sort();
    let expected: Vec<String> = (0..WORKERS)
        .map(|i| format!("port-{}", base + i as u16))
        .collect();
    assert_eq!(names, expected, "FDNAME=port-<n>, one per port");
    let served = response(handshake_request(base));
    assert!(
        served.starts_with("HTTP/1.1 200"),
        "first run serves: {served}"
    );
    let status = first.stop();
    assert!(
        status.success(),
        "first run: {status}; log:\n{}",
        first.log()
    );

    // No primary runs: the stored socket still accepts into its queue.
    let waiting = handshake_request(base + 1);

    let stored = std::mem::take(&mut systemd.got.stored);
    systemd.got.texts.clear();
    let mut second = spawn(&systemd, base, &stored);
    systemd.wait_until("READY=1 from the second run", &mut second, |got| {
        got.texts.iter().any(|t| t.lines().any(|l| l == "READY=1"))
    });
    let answer = response(waiting);
    assert!(
        answer.starts_with("HTTP/1.1 200"),
        "the connection made between the runs is served: {answer}"
    );
    let served = response(handshake_request(base));
    assert!(
        served.starts_with("HTTP/1.1 200"),
        "second run serves: {served}"
    );
    let log = second.log();
    assert_eq!(
        log.matches("with the socket systemd kept").count(),
        WORKERS,
        "no port was bound again; log:\n{log}"
    );
    assert_eq!(
        systemd.got.stored.len(),
        WORKERS,
        "the second run stores its listeners too"
    );
    let status = second.stop();
    assert!(status.success(), "second run: {status}");
    drop(stored);
}
