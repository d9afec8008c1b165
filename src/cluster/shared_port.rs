//! `--shared-port`: the primary accepts on one port and hands each connection to a
//! worker by passing its descriptor (`SCM_RIGHTS`) over a socketpair of its own
//! (fd 5 in the worker), apart from the framed ipc socket.
//!
//! The primary only *peeks* (`MSG_PEEK`) at the request line, so the worker reads
//! the whole request from the socket as if it had accepted it. A request with a
//! `sid` goes to the worker whose index the sid carries (see
//! [`crate::engine::sid`]), any other to the least-loaded worker. Handed-off
//! connections are closed after each answer but a protocol switch, so a
//! keep-alive connection never carries a request to the wrong worker. A request
//! line that does not come within [`FIRST_LINE_TIMEOUT`], is longer than
//! [`MAX_REQUEST_LINE`] or is not HTTP/1 is answered by the primary itself.

use std::{
    io,
    os::fd::{AsRawFd, FromRawFd, RawFd},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncWriteExt, Interest},
    net::{TcpListener, TcpStream, UnixStream},
    sync::{mpsc, Semaphore},
    time::Instant,
};
use tracing::{debug, warn};

use super::primary::Event;
use crate::engine::sid;

/// Time a new connection has to send its request line.
pub(super) const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest request line the primary waits for.
pub(super) const MAX_REQUEST_LINE: usize = 8 * 1024;
/// Connections the primary waits on at once for a request line; more are dropped.
const MAX_PENDING: usize = 16 * 1024;
/// How long the primary waits between two looks at a partial request line (most
/// lines come in the first segment: this is for the slow ones).
const PEEK_AGAIN_AFTER: Duration = Duration::from_millis(20);

const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const TOO_LONG: &[u8] =
    b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
pub(super) const UNAVAILABLE: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Where a request goes, from its request line.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// To the worker the sid names (if the primary has it).
    Worker(usize),
    /// A new session, or no Engine.IO request: the least-loaded worker.
    AnyWorker,
}

/// Why the primary answered a connection itself.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    BadRequest,
    TooLong,
    Timeout,
    /// Closed by the client before a request line came.
    Gone,
}

/// Accepts on the shared port for ever, each connection in a task of its own that
/// reads its request line and sends it to the primary's loop as [`Event::Route`].
pub(super) async fn accept_loop(listener: TcpListener, events: mpsc::UnboundedSender<Event>) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!(target: "cluster", "shared port: accept: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            debug!(target: "cluster", "shared port: too many connections without a request line");
            continue;
        };
        let events = events.clone();
        tokio::spawn(async move {
            let routed = first_line(&stream).await;
            drop(permit);
            match routed {
                Ok(route) => {
                    if let Ok(stream) = stream.into_std() {
                        let _ = events.send(Event::Route { stream, route });
                    }
                }
                Err(refusal) => refuse(stream, refusal).await,
            }
        });
    }
}

/// Peeks at `stream` until its request line is there, within the limits.
async fn first_line(stream: &TcpStream) -> Result<Route, Refusal> {
    let deadline = Instant::now() + FIRST_LINE_TIMEOUT;
    let mut buf = vec![0u8; MAX_REQUEST_LINE];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Err(Refusal::Timeout),
            Ok(Err(_) | Ok(0)) => return Err(Refusal::Gone),
            Ok(Ok(n)) => n,
        };
        // Only the bytes not looked at yet can hold the end of the line.
        if let Some(end) = buf[seen..n].iter().position(|&b| b == b'\n') {
            return route_of(&buf[..seen + end]);
        }
        if n == buf.len() {
            return Err(Refusal::TooLong);
        }
        seen = n;
        // `peek` returns at once while the bytes it saw are still queued: wait for more.
        if Instant::now() + PEEK_AGAIN_AFTER >= deadline {
            tokio::time::sleep_until(deadline).await;
            return Err(Refusal::Timeout);
        }
        tokio::time::sleep(PEEK_AGAIN_AFTER).await;
    }
}

/// Routes by the request line (without its line end): `METHOD TARGET HTTP/1.x`.
fn route_of(line: &[u8]) -> Result<Route, Refusal> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    if method.is_empty()
        || !method.iter().all(u8::is_ascii_alphabetic)
        || !version.starts_with(b"HTTP/1.")
        || target.is_empty()
    {
        return Err(Refusal::BadRequest);
    }
    let query = match target.iter().position(|&b| b == b'?') {
        Some(q) => &target[q + 1..],
        None => return Ok(Route::AnyWorker),
    };
    let sid = query
        .split(|&b| b == b'&')
        .find_map(|pair| pair.strip_prefix(b"sid="));
    Ok(match sid.and_then(sid::worker_of) {
        Some(worker) => Route::Worker(worker),
        None => Route::AnyWorker,
    })
}

async fn refuse(mut stream: TcpStream, refusal: Refusal) {
    debug!(target: "cluster", "shared port: first request refused: {refusal:?}");
    let answer = match refusal {
        Refusal::BadRequest => BAD_REQUEST,
        Refusal::TooLong => TOO_LONG,
        Refusal::Timeout => TIMEOUT,
        Refusal::Gone => return,
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(answer)).await;
}

/// Sends `fd` over the Unix socket `sock` (one byte carrying it), without waiting:
/// a worker whose socket buffer is full does not read, and the connection is
/// better dropped than the primary stalled.
pub(super) fn send_fd(sock: RawFd, fd: RawFd) -> io::Result<()> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // u64s: aligned for a cmsghdr; room for CMSG_SPACE(one fd).
    let mut control = [0u64; 4];
    // SAFETY: the header points at live buffers of the lengths given; the cmsg is
    // written within `control` (CMSG_SPACE of one int fits in 32 bytes).
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        if libc::sendmsg(sock, &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`]: `Ok(None)` at the end of the stream.
fn recv_fd(sock: RawFd) -> io::Result<Option<RawFd>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u64; 4];
    // SAFETY: as in `send_fd`; the cmsgs read are the kernel's, within `control`.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT);
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(None);
        }
        let mut received = None;
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let count = ((*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize)
                    / std::mem::size_of::<RawFd>();
                for k in 0..count {
                    let fd = std::ptr::read_unaligned(data.add(k));
                    // One per message is all the primary sends; close any other.
                    if received.is_none() {
                        received = Some(fd);
                    } else {
                        libc::close(fd);
                    }
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        // A byte without a descriptor (it was cut): nothing to serve, read on.
        Ok(Some(received.unwrap_or(-1)))
    }
}

/// In a worker: receives the connections the primary hands over on `sock` and
/// passes them to the accept loop, until the primary closes it.
pub(super) async fn receive_loop(
    sock: std::os::unix::net::UnixStream,
    to: mpsc::Sender<TcpStream>,
) {
    let sock = match sock
        .set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(sock))
    {
        Ok(s) => s,
        Err(err) => {
            warn!(target: "cluster", "shared port: handoff socket: {err}");
            return;
        }
    };
    loop {
        if sock.readable().await.is_err() {
            return;
        }
        let fd = match sock.try_io(Interest::READABLE, || recv_fd(sock.as_raw_fd())) {
            Ok(Some(fd)) if fd >= 0 => fd,
            Ok(Some(_)) => continue,
            Ok(None) => return,
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => continue,
            Err(err) => {
                warn!(target: "cluster", "shared port: handoff: {err}");
                return;
            }
        };
        // SAFETY: a descriptor just received, owned by nobody else in this process.
        let stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
        let stream = match stream
            .set_nonblocking(true)
            .and_then(|()| TcpStream::from_std(stream))
        {
            Ok(s) => s,
            Err(err) => {
                debug!(target: "cluster", "shared port: handed-off connection: {err}");
                continue;
            }
        };
        if to.send(stream).await.is_err() {
            return;
        }
    }
}

impl super::primary::Primary {
    /// Hands a connection of the shared port to its worker: the one its sid names,
    /// else the least-loaded ready worker (connections at its last report, plus the
    /// new sessions sent to it since).
    pub(super) fn route(&mut self, stream: std::net::TcpStream, route: Route) {
        let owner = match route {
            Route::Worker(w) if w < self.slots.len() && self.slots[w].handoff.is_some() => Some(w),
            _ => None,
        };
        // A worker still starting reads its handoff socket once ready: only when no
        // worker is ready.
        let target = owner.or_else(|| {
            (0..self.slots.len())
                .filter(|&j| self.slots[j].handoff.is_some())
                .min_by_key(|&j| {
                    let slot = &self.slots[j];
                    (!slot.ready, slot.connections + slot.routed_new)
                })
        });
        let (Some(j), false) = (target, self.shutting_down) else {
            // Every worker is gone, or the cluster drains: the client retries.
            let _ = std::io::Write::write_all(&mut &stream, UNAVAILABLE);
            return;
        };
        let slot = &mut self.slots[j];
        let Some(handoff) = &slot.handoff else { return };
        match send_fd(handoff.as_raw_fd(), stream.as_raw_fd()) {
            Ok(()) => {
                if owner.is_none() {
                    slot.routed_new += 1;
                }
            }
            Err(err) => {
                warn!(target: "cluster", worker = j, "cannot hand a connection over: {err}")
            }
        }
        // Our copy closes here; the worker's stays open.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_the_sid_of_the_request_line() {
        let route = |line: &str| route_of(line.as_bytes());
        assert_eq!(
            route("GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r"),
            Ok(Route::AnyWorker)
        );
        assert_eq!(route("GET / HTTP/1.1"), Ok(Route::AnyWorker));
        assert_eq!(
            route("POST /socket.io/?EIO=4&transport=polling&sid=ABxxxxxxxxxxxxxxxxxx HTTP/1.1\r"),
            Ok(Route::Worker(1))
        );
        assert_eq!(
            route("GET /socket.io/?sid=BAxxxxxxxxxxxxxxxxxx&EIO=4 HTTP/1.0"),
            Ok(Route::Worker(64))
        );
        // Not one of our sids: any worker answers "Session ID unknown".
        assert_eq!(
            route("GET /socket.io/?sid=nope HTTP/1.1"),
            Ok(Route::AnyWorker)
        );
        for bad in [
            "",
            "GET",
            "GET /",
            "GET / HTTP/2",
            "GET  / HTTP/1.1",
            "G\x01T / HTTP/1.1",
            "GET / HTTP/1.1 x",
        ] {
            assert_eq!(route(bad), Err(Refusal::BadRequest), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_descriptor_travels_over_the_socketpair() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        send_fd(a.as_raw_fd(), accepted.as_raw_fd()).unwrap();
        drop(accepted);
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(receive_loop(b, tx));
        let mut stream = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stream.peer_addr().unwrap(), client.local_addr().unwrap());
        stream.write_all(b"hi").await.unwrap();
        let mut got = [0u8; 2];
        std::io::Read::read_exact(&mut &client, &mut got).unwrap();
        assert_eq!(&got, b"hi");
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
    }
}
