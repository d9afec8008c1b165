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
/// With `--shared-port`, the descriptor a worker receives handed-off connections on.
pub(crate) const HANDOFF_FD: RawFd = 5;
/// The descriptor a worker finds the interest hint table on (see
/// [`crate::adapter::hints`]), when [`HINTS_ENV`] is set.
pub(crate) const HINTS_FD: RawFd = 6;
/// Set in a worker's environment when it has the hint table on [`HINTS_FD`].
pub(crate) const HINTS_ENV: &str = "RSIO_WORKER_HINTS";
/// The descriptor a worker receives its direct links to the other workers on
/// (see [`crate::adapter::direct`]), when [`LANE_ENV`] is set.
pub(crate) const LINKS_FD: RawFd = 7;
/// Set in a worker's environment when it has its links channel on
/// [`LINKS_FD`]: its lane in the hint table.
pub(crate) const LANE_ENV: &str = "RSIO_WORKER_LANE";
/// Set in a worker's environment: its index. Its presence makes a process a worker.
pub(crate) const WORKER_ENV: &str = "RSIO_WORKER_INDEX";
pub(crate) const WORKERS_ENV: &str = "RSIO_WORKER_COUNT";
/// Set in a worker's environment when it has a handoff socket on [`HANDOFF_FD`]: it
/// decides, not the config the worker reads again (its file may have changed).
pub(crate) const HANDOFF_ENV: &str = "RSIO_WORKER_HANDOFF";
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
    /// This process's own binary and arguments. The binary is the path it was
    /// started by (made absolute now, links not followed), so that a worker started
    /// later (a restart, a `SIGHUP` reload) runs what that path names then: a binary
    /// replaced on disk, or a link switched to a new release. `/proc/self/exe`
    /// would name the old file. Started through `PATH`, it is the resolved path.
    pub(crate) fn current() -> std::io::Result<WorkerCommand> {
        let mut args = std::env::args_os();
        let argv0 = args.next().map(PathBuf::from);
        let exe = match argv0 {
            Some(p) if p.components().count() > 1 => std::path::absolute(p)?,
            _ => std::env::current_exe()?,
        };
        Ok(WorkerCommand {
            exe,
            args: args.collect(),
        })
    }

    /// Spawns worker `index` of `count` with `fds` in place: the listener on fd 3,
    /// the ipc socket on fd 4, the handoff socket (if any) on fd 5, the hint
    /// table (if any) on fd 6 and its links channel (if any) on fd 7. It gets SIGTERM if the spawning thread (the
    /// primary's main thread) dies.
    pub(crate) fn spawn(
        &self,
        index: usize,
        count: usize,
        cpu: Option<usize>,
        fds: WorkerFds<'_>,
    ) -> std::io::Result<tokio::process::Child> {
        let WorkerFds {
            listener,
            ipc,
            handoff,
            hints,
            links,
        } = fds;
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
        match handoff {
            Some(_) => cmd.env(HANDOFF_ENV, "1"),
            None => cmd.env_remove(HANDOFF_ENV),
        };
        match hints {
            Some(_) => cmd.env(HINTS_ENV, "1"),
            None => cmd.env_remove(HINTS_ENV),
        };
        match links {
            Some((_, lane)) => cmd.env(LANE_ENV, lane.to_string()),
            None => cmd.env_remove(LANE_ENV),
        };
        // Everything the child needs is computed here, before the fork: after it, only
        // async-signal-safe calls, and no allocation (another thread of the primary
        // may have held the allocator's lock at the fork).
        let plan = ForkPlan {
            sources: [
                listener.as_raw_fd(),
                ipc.as_raw_fd(),
                handoff.map_or(-1, |h| h.as_raw_fd()),
                hints.map_or(-1, |h| h.as_raw_fd()),
                links.map_or(-1, |(l, _)| l.as_raw_fd()),
            ],
            parent: std::process::id() as libc::pid_t,
        };
        // SAFETY: `after_fork` makes only async-signal-safe calls and allocates nothing.
        unsafe {
            cmd.pre_exec(move || after_fork(&plan));
        }
        let mut cmd = tokio::process::Command::from(cmd);
        // A worker never outlives its `Child` handle: if the primary's runtime goes
        // away before reaping it, it is killed.
        cmd.kill_on_drop(true);
        cmd.spawn()
    }
}

/// The descriptors a worker is started with.
pub(crate) struct WorkerFds<'a> {
    pub listener: &'a dyn AsRawFd,
    pub ipc: &'a dyn AsRawFd,
    pub handoff: Option<&'a dyn AsRawFd>,
    pub hints: Option<&'a dyn AsRawFd>,
    /// The links channel, and the lane it is for.
    pub links: Option<(&'a dyn AsRawFd, usize)>,
}

/// The descriptor each of [`ForkPlan::sources`] goes to: 3, 4, 5, 6, 7.
const TARGETS: [RawFd; 5] = [LISTEN_FD, IPC_FD, HANDOFF_FD, HINTS_FD, LINKS_FD];

/// What the child does between `fork` and `exec`, computed before the fork.
#[derive(Debug, Clone, Copy)]
struct ForkPlan {
    /// The descriptors to place on [`TARGETS`], in order: the listener, the ipc
    /// socket, the handoff socket, the hint table, the links channel; -1: none.
    sources: [RawFd; 5],
    /// The primary's pid: the child's parent, unless the primary died meanwhile.
    parent: libc::pid_t,
}

/// Places the descriptors, asks for SIGTERM when the primary dies, and checks it is
/// still there. Runs in the forked child: async-signal-safe calls only (dup2, fcntl,
/// prctl, getppid) and no allocation, errors as raw errno values.
///
/// # Safety
/// Must run in a freshly forked child: it overwrites descriptors 3 to 7.
unsafe fn after_fork(plan: &ForkPlan) -> std::io::Result<()> {
    let taken = LISTEN_FD..=LINKS_FD;
    // First every source on a target moves out of the way (a copy above 10,
    // closed at exec), so that no placement overwrites a source still to come.
    let mut sources = plan.sources;
    for fd in &mut sources {
        if *fd >= 0 {
            *fd = out_of_the_way(*fd, taken.clone())?;
        }
    }
    for (&src, &dst) in sources.iter().zip(&TARGETS) {
        if src >= 0 {
            place_fd(src, dst)?;
        }
    }
    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // The primary may have died before prctl took effect. `from_raw_os_error` stores
    // the number inline; `io::Error::other` would box a message.
    if libc::getppid() != plan.parent {
        return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// `fd`, or a close-on-exec copy of it above 10 when it is in `taken`.
unsafe fn out_of_the_way(
    fd: RawFd,
    taken: std::ops::RangeInclusive<RawFd>,
) -> std::io::Result<RawFd> {
    if !taken.contains(&fd) {
        return Ok(fd);
    }
    let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10);
    if moved < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(moved)
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

#[cfg(test)]
mod tests {
    use std::{
        alloc::{GlobalAlloc, Layout, System},
        os::fd::AsRawFd,
        sync::atomic::{AtomicBool, AtomicUsize, Ordering},
        time::{Duration, Instant},
    };

    use super::*;

    /// Counts allocations while `COUNTING` is set (only ever in a forked child).
    struct Counting;
    static COUNTING: AtomicBool = AtomicBool::new(false);
    static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

    // SAFETY: forwards to the system allocator; counting touches atomics only.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if COUNTING.load(Ordering::Relaxed) {
                ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
            }
            System.alloc(layout)
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            System.dealloc(ptr, layout)
        }
    }

    #[global_allocator]
    static ALLOCATOR: Counting = Counting;

    /// Runs `after_fork` in a forked child, as `pre_exec` does, along the path where
    /// the primary is gone (the error path), and returns the child's exit status:
    /// 0 when it failed with ESRCH without allocating.
    fn run_after_fork_in_child() -> i32 {
        let a = std::fs::File::open("/dev/null").unwrap();
        let b = std::fs::File::open("/dev/null").unwrap();
        let plan = ForkPlan {
            sources: [
                a.as_raw_fd(),
                b.as_raw_fd(),
                b.as_raw_fd(),
                a.as_raw_fd(),
                b.as_raw_fd(),
            ],
            // No process is the parent of pid 0's child: the "primary exited" path.
            parent: 0,
        };
        // SAFETY: the child only runs `after_fork` (async-signal-safe, the code under
        // test) and reads atomics before `_exit`.
        let child = unsafe { libc::fork() };
        assert!(child >= 0, "fork: {}", std::io::Error::last_os_error());
        if child == 0 {
            COUNTING.store(true, Ordering::Relaxed);
            // SAFETY: a forked child; its descriptors 3 and 4 may be overwritten.
            let res = unsafe { after_fork(&plan) };
            let allocations = ALLOCATIONS.load(Ordering::Relaxed);
            let esrch = matches!(&res, Err(e) if e.raw_os_error() == Some(libc::ESRCH));
            let code = match (allocations, esrch) {
                (0, true) => 0,
                (0, false) => 1,
                (n, _) => 2 + n.min(100) as i32,
            };
            // SAFETY: leaves the child at once, running nothing of the parent's.
            unsafe { libc::_exit(code) };
        }
        // A child that allocated could deadlock on the allocator's lock: bounded wait.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut status = 0;
            // SAFETY: waits for our own child.
            let got = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
            if got == child {
                assert!(libc::WIFEXITED(status), "child status {status}");
                return libc::WEXITSTATUS(status);
            }
            if Instant::now() > deadline {
                // SAFETY: our own child.
                unsafe {
                    libc::kill(child, libc::SIGKILL);
                    libc::waitpid(child, &mut status, 0);
                }
                panic!("the forked child hung (allocator lock?)");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn after_fork_allocates_nothing_even_on_error() {
        let code = run_after_fork_in_child();
        assert_eq!(
            code, 0,
            "after_fork in the child: 1 = not ESRCH, 2+n = n allocations"
        );
    }
}
