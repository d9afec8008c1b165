//! What a worker inherits from its primary: the listener, the ipc socket,
//! the handoff socket behind a shared port (checked, so that a process
//! started by hand with the worker's environment refuses to run), and the
//! interest hint table and direct links channel when the primary passed them.

use std::{
    os::fd::{FromRawFd, OwnedFd, RawFd},
    sync::Arc,
};

use tracing::{error, warn};

use super::spawn::{
    HANDOFF_FD, HINTS_ENV, HINTS_FD, IPC_FD, LANE_ENV, LINKS_FD, LISTEN_FD, WORKER_ENV,
};
use crate::adapter::{hints, ClusterLink};

/// The descriptors a worker gets from the primary.
pub(super) struct Inherited {
    /// The worker's listening socket (its port).
    pub listener: std::net::TcpListener,
    /// The ipc socket to the primary.
    pub ipc: std::os::unix::net::UnixStream,
    /// Behind `--shared-port`: connections the primary hands over.
    pub handoff: Option<std::os::unix::net::UnixStream>,
    /// The interest hint table, when the primary passed one.
    pub hints: Option<OwnedFd>,
    /// This process's lane and its links channel.
    pub links: Option<(usize, OwnedFd)>,
}

impl Inherited {
    /// Takes the descriptors, once per process, after checking that they are
    /// what the primary passes (`shared_port`: the handoff socket too).
    pub fn take(shared_port: bool) -> Result<Inherited, InheritedFdError> {
        check_inherited_fds(shared_port)?;
        // SAFETY: the primary placed our listener and ipc socket on these
        // descriptors (checked above: a listening socket and a Unix socket),
        // and nothing else in this process owns them.
        let listener = unsafe { std::net::TcpListener::from_raw_fd(LISTEN_FD) };
        let ipc = unsafe { std::os::unix::net::UnixStream::from_raw_fd(IPC_FD) };
        // SAFETY: as above, with `--shared-port` (checked: a Unix socket).
        let handoff =
            shared_port.then(|| unsafe { std::os::unix::net::UnixStream::from_raw_fd(HANDOFF_FD) });
        Ok(Inherited {
            listener,
            ipc,
            handoff,
            hints: inherited_hints(),
            links: inherited_links(),
        })
    }
}

/// Exit status of a worker whose descriptors 3 and 4 are not what the primary passes
/// (sysexits' EX_USAGE).
pub(super) const EXIT_NOT_STARTED_BY_PRIMARY: u8 = 64;

/// Why a process with the worker environment cannot be a worker.
#[derive(Debug, thiserror::Error)]
pub(super) enum InheritedFdError {
    #[error("{WORKER_ENV} is set but descriptor {fd} is not open ({source}): a worker is started by the rsio primary, not by hand")]
    Closed { fd: RawFd, source: std::io::Error },
    #[error("{WORKER_ENV} is set but descriptor {fd} is not a socket: a worker is started by the rsio primary, not by hand")]
    NotASocket { fd: RawFd },
    #[error("{WORKER_ENV} is set but descriptor {fd} is not a listening socket: a worker is started by the rsio primary, not by hand")]
    NotListening { fd: RawFd },
    #[error("{WORKER_ENV} is set but descriptor {fd} is not a Unix socket: a worker is started by the rsio primary, not by hand")]
    NotUnix { fd: RawFd },
}

/// Descriptor 3 must be a listening socket and 4 (and 5, behind a shared port) a
/// Unix socket, as the primary passes them.
fn check_inherited_fds(shared_port: bool) -> Result<(), InheritedFdError> {
    let unix: &[RawFd] = if shared_port {
        &[IPC_FD, HANDOFF_FD]
    } else {
        &[IPC_FD]
    };
    for &fd in [LISTEN_FD].iter().chain(unix) {
        // SAFETY: fstat on any descriptor number, into a zeroed struct it fills.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            let source = std::io::Error::last_os_error();
            return Err(InheritedFdError::Closed { fd, source });
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
            return Err(InheritedFdError::NotASocket { fd });
        }
    }
    let mut listening: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: a socket (checked above); the option value fits the buffer given.
    let res = unsafe {
        libc::getsockopt(
            LISTEN_FD,
            libc::SOL_SOCKET,
            libc::SO_ACCEPTCONN,
            (&mut listening as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if res != 0 || listening == 0 {
        return Err(InheritedFdError::NotListening { fd: LISTEN_FD });
    }
    for &fd in unix {
        // SAFETY: a socket (checked above); the address fits a sockaddr_storage.
        let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        let res = unsafe {
            libc::getsockname(
                fd,
                (&mut addr as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        };
        if res != 0 || addr.ss_family as libc::c_int != libc::AF_UNIX {
            return Err(InheritedFdError::NotUnix { fd });
        }
    }
    Ok(())
}

/// The interest hint table on [`HINTS_FD`], when the primary passed one (a
/// memfd: a regular file); anything else there is left alone.
fn inherited_hints() -> Option<OwnedFd> {
    std::env::var_os(HINTS_ENV)?;
    // SAFETY: fstat on any descriptor number, into a zeroed struct it fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(HINTS_FD, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFREG
    {
        warn!(target: "cluster", "{HINTS_ENV} is set but descriptor {HINTS_FD} is not the hint table: every room broadcast goes through the primary");
        return None;
    }
    // SAFETY: the primary placed the table's memfd there (checked: a regular
    // file), and nothing else in this process owns it.
    Some(unsafe { OwnedFd::from_raw_fd(HINTS_FD) })
}

/// This process's lane and its links channel on [`LINKS_FD`], when the
/// primary passed them (a socket); anything else there is left alone.
fn inherited_links() -> Option<(usize, OwnedFd)> {
    let lane = std::env::var(LANE_ENV).ok()?.parse().ok()?;
    // SAFETY: fstat on any descriptor number, into a zeroed struct it fills.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(LINKS_FD, &mut st) } != 0 || st.st_mode & libc::S_IFMT != libc::S_IFSOCK
    {
        warn!(target: "cluster", "{LANE_ENV} is set but descriptor {LINKS_FD} is not a socket: no direct links");
        return None;
    }
    // SAFETY: the primary placed the channel there (checked: a socket), and
    // nothing else in this process owns it.
    Some((lane, unsafe { OwnedFd::from_raw_fd(LINKS_FD) }))
}

/// Maps the hint table on `fd` (the mapping stays; the descriptor is not needed
/// any more) for this process's lane, and takes its direct links. Without a
/// lane the process could not count its rooms in: the table is disabled for
/// every process, and every broadcast goes through the primary.
pub(super) fn use_hints(
    link: &Arc<ClusterLink>,
    fd: &OwnedFd,
    links: Option<(usize, OwnedFd)>,
    max_queued: usize,
) {
    let table = match hints::HintTable::open(fd) {
        Ok(table) => table,
        Err(err) => {
            // This process cannot count its rooms in: no other may trust the
            // table (nor, with --redis, the primary's routing by it).
            warn!(target: "cluster", "{err}: interest hints disabled, every broadcast goes through the primary");
            if let Err(err) = hints::HintTable::disable_fd(fd) {
                error!(target: "cluster", "cannot disable the hint table either: {err}");
            }
            return;
        }
    };
    let Some((lane, channel)) = links else {
        warn!(target: "cluster", "no lane given: interest hints disabled, every broadcast goes through the primary");
        table.disable();
        return;
    };
    match hints::Hints::new(table, lane) {
        Ok(h) => link.use_hints(h),
        Err(err) => {
            warn!(target: "cluster", "{err}: interest hints disabled, every broadcast goes through the primary");
            if let Ok(table) = hints::HintTable::open(fd) {
                table.disable();
            }
            return;
        }
    }
    if let Err(err) = link.use_direct(channel, max_queued) {
        // The hints stay (kept-local broadcasts); the rest goes through the primary.
        warn!(target: "cluster", "no direct links: {err}");
    }
}
