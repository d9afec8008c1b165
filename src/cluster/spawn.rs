//! Starting a worker: re-executing this binary with its listener and its ipc
//! socket as inherited descriptors (never `fork()` of a process that already
//! runs a runtime).

use std::{
    ffi::OsString,
    os::fd::{AsRawFd, RawFd},
    os::unix::process::CommandExt,
    path::PathBuf,
    process::Stdio,
};

/// The descriptor a worker finds its listener on.
pub(crate) const LISTEN_FD: RawFd = 3;
/// The descriptor a worker finds its ipc socket on.
pub(crate) const IPC_FD: RawFd = 4;
/// Set in a worker's environment: its index. Its presence makes a process a worker.
pub(crate) const WORKER_ENV: &str = "RSIO_WORKER_INDEX";
pub(crate) const WORKERS_ENV: &str = "RSIO_WORKER_COUNT";
/// The CPU a worker pins itself to.
pub(crate) const CPU_ENV: &str = "RSIO_WORKER_CPU";

/// Variables only the primary may use: a worker must never talk to systemd.
const STRIPPED_ENV: &[&str] = &[
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

pub(crate) struct WorkerCommand {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl WorkerCommand {
    /// This process's own binary and arguments.
    pub(crate) fn current() -> std::io::Result<WorkerCommand> {
        Ok(WorkerCommand {
            exe: std::env::current_exe()?,
            args: std::env::args_os().skip(1).collect(),
        })
    }

    /// Spawns worker `index` of `count` with `listener` on fd 3 and `ipc` on fd 4.
    /// It gets SIGTERM if the spawning thread (the primary's main thread) dies.
    pub(crate) fn spawn(
        &self,
        index: usize,
        count: usize,
        cpu: Option<usize>,
        listener: &impl AsRawFd,
        ipc: &impl AsRawFd,
    ) -> std::io::Result<tokio::process::Child> {
        let mut cmd = std::process::Command::new(&self.exe);
        cmd.args(&self.args)
            .env(WORKER_ENV, index.to_string())
            .env(WORKERS_ENV, count.to_string())
            .stdin(Stdio::null());
        for var in STRIPPED_ENV {
            cmd.env_remove(var);
        }
        match cpu {
            Some(cpu) => cmd.env(CPU_ENV, cpu.to_string()),
            None => cmd.env_remove(CPU_ENV),
        };
        let (listen_fd, ipc_fd) = (listener.as_raw_fd(), ipc.as_raw_fd());
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: only async-signal-safe calls (dup2, fcntl, prctl, getppid)
        // run between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // Move the ipc fd out of the way first if it sits on the listener's slot.
                let ipc_src = if ipc_fd == LISTEN_FD {
                    let moved = libc::fcntl(ipc_fd, libc::F_DUPFD, 10);
                    if moved < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    moved
                } else {
                    ipc_fd
                };
                place_fd(listen_fd, LISTEN_FD)?;
                place_fd(ipc_src, IPC_FD)?;
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The primary may have died before prctl took effect.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("primary exited"));
                }
                Ok(())
            });
        }
        tokio::process::Command::from(cmd).spawn()
    }
}

/// Puts `src` on `dst` without close-on-exec, so the child inherits it.
unsafe fn place_fd(src: RawFd, dst: RawFd) -> std::io::Result<()> {
    if src == dst {
        let flags = libc::fcntl(dst, libc::F_GETFD);
        if flags < 0 || libc::fcntl(dst, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    } else if libc::dup2(src, dst) < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The CPUs this process may run on, in order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..nix::sched::CpuSet::count())
            .filter(|&i| set.is_set(i).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_current_thread(cpu: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

/// Lets the calling thread run on any of `cpus` (blocking-pool threads of a
/// pinned worker must not compete with its event loop).
pub(crate) fn unpin_current_thread(cpus: &[usize]) {
    let mut set = nix::sched::CpuSet::new();
    for &cpu in cpus {
        let _ = set.set(cpu);
    }
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
}
