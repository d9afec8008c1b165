//! Listening sockets that outlive the primary. Under systemd, the primary stores
//! each listener in the service's descriptor store (`FDSTORE=1`,
//! `FDNAME=port-<n>`) and, on its next start, takes back what it is handed
//! (`LISTEN_FDS`, `LISTEN_PID`, `LISTEN_FDNAMES`) instead of binding: a restart
//! (`systemctl restart`, a crash with `Restart=`) never closes a port, and the
//! connections made meanwhile wait in the kernel's accept queue. Sockets of a
//! `.socket` unit (socket activation) come the same way; every inherited socket is
//! matched to a port by its own address, whatever its name.

use std::{
    collections::HashMap,
    net::TcpListener,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use nix::sys::socket::{
    sendmsg, socket, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType, UnixAddr,
};
use tracing::{debug, info, warn};

/// Why a listener could not be stored.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FdStoreError {
    #[error("NOTIFY_SOCKET is not a usable address: {0}")]
    Address(nix::Error),
    #[error("cannot send to NOTIFY_SOCKET: {0}")]
    Send(nix::Error),
}

/// The listening TCP sockets systemd handed to this process, by port.
pub(crate) struct Inherited {
    by_port: HashMap<u16, TcpListener>,
}

impl Inherited {
    /// Takes what systemd passed (nothing unless `LISTEN_PID` is this process).
    /// Descriptors that are not listening TCP sockets are closed.
    pub(crate) fn from_env() -> Inherited {
        let mut by_port = HashMap::new();
        let fds = match sd_notify::listen_fds_with_names() {
            Ok(fds) => fds,
            Err(err) => {
                warn!(target: "cluster", "ignoring the inherited sockets: {err}");
                return Inherited { by_port };
            }
        };
        for (fd, name) in fds {
            // SAFETY: systemd passed this descriptor to this process (LISTEN_PID is
            // ours), and nothing else in the process owns it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd) };
            let listener = TcpListener::from(owned);
            match listener.local_addr() {
                Ok(addr) if is_listening(&listener) => {
                    debug!(target: "cluster", "inherited {name} (fd {fd}): {addr}");
                    by_port.insert(addr.port(), listener);
                }
                _ => {
                    warn!(target: "cluster", "inherited descriptor {fd} ({name}) is not a listening TCP socket: closed")
                }
            }
        }
        Inherited { by_port }
    }

    /// The inherited listener on `port`, if any.
    pub(crate) fn take(&mut self, port: u16) -> Option<TcpListener> {
        self.by_port.remove(&port)
    }

    /// Closes what no port took (a configuration that changed), with a log line.
    pub(crate) fn close_rest(self) {
        for (port, _) in self.by_port {
            info!(target: "cluster", "inherited listener on port {port} is not configured: closed");
        }
    }
}

fn is_listening(listener: &TcpListener) -> bool {
    nix::sys::socket::getsockopt(listener, nix::sys::socket::sockopt::AcceptConn).unwrap_or(false)
}

/// Stores `listener` (serving `port`) in systemd's descriptor store, when
/// `NOTIFY_SOCKET` is set. systemd keeps one copy of a socket stored twice.
pub(crate) fn store(listener: &TcpListener, port: u16) -> Result<(), FdStoreError> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => UnixAddr::new_abstract(name),
        None => UnixAddr::new(bytes),
    }
    .map_err(FdStoreError::Address)?;
    let sock = socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(FdStoreError::Send)?;
    let text = format!("FDSTORE=1\nFDNAME=port-{port}\n");
    let iov = [std::io::IoSlice::new(text.as_bytes())];
    let fds = [listener.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg(
        sock.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::empty(),
        Some(&addr),
    )
    .map_err(FdStoreError::Send)?;
    Ok(())
}
