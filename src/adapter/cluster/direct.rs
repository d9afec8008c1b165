//! Direct links: a worker's broadcasts that need no sequencing go straight to
//! the worker processes with recipients, over a Unix socket to each, instead
//! of through the primary.
//!
//! The primary sets the links up. Every worker process has a *links channel*
//! (a `SOCK_SEQPACKET` socket inherited on a fixed descriptor) on which the
//! primary sends it one record per link: the peer's lane, the peer's epoch (see
//! [`super::hints`]) and one end of a fresh `socketpair`, by `SCM_RIGHTS`; the
//! other end goes to the peer. Before it spawns a process, the primary writes
//! the new lane's epoch into the hint table and the link records to every live
//! process and to the new one; so when a process meets a lane (a bit in the
//! table, or a broadcast to everyone) whose epoch its link does not have, the
//! record of the right link is already in its channel: it reads the channel
//! then and there ([`Direct::send`]), and also whenever it is readable. A lane
//! whose process is gone has epoch 0, or a link that ended: nothing is sent to
//! it (the process, and its clients, are gone). Nothing is queued for later,
//! so one sender's broadcasts reach a receiver in the order they were sent.
//!
//! A link carries [`Message::Broadcast`]s without acks or offsets, each frame
//! encoded once by the sender and written as it is to every link. A link whose
//! peer is gone (end of stream, a write error) is dropped quietly: the primary
//! reports deaths as before. A broadcast is never rerouted through the
//! primary, where a later one sent straight could overtake it: once a link's
//! backlog reaches the ipc limit (its peer does not read), the worker tells the
//! primary ([`Message::LinkStuck`]), once, which kills that process if it still
//! has that lane and epoch, as it kills a worker that lets the primary's own
//! backlog pass the limit; until it is gone, what is sent to it is dropped.

use std::{
    io::{IoSlice, IoSliceMut},
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
};

use nix::{
    errno::Errno,
    sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags},
};
use rsio_ipc::{EncodedFrame, IpcConnection, IpcReader, IpcSender, Message, SendError};
use tokio::io::{unix::AsyncFd, Interest};
use tracing::{debug, warn};

use super::{
    hints::{HintTable, LaneSet, Reach},
    ClusterLink,
};

/// Bytes of one link record: the lane (`u32`), 4 bytes of padding, the epoch (`u64`).
const RECORD: usize = 16;

/// Sends on the links `channel` of a process its link `fd` to the process of
/// `lane` and `epoch` (the primary's side). Waits no longer than the channel's
/// send timeout.
pub(crate) fn send_link(
    channel: BorrowedFd<'_>,
    lane: usize,
    epoch: u64,
    fd: BorrowedFd<'_>,
) -> nix::Result<()> {
    let mut record = [0u8; RECORD];
    record[..4].copy_from_slice(&(lane as u32).to_le_bytes());
    record[8..].copy_from_slice(&epoch.to_le_bytes());
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(
        channel.as_raw_fd(),
        &[IoSlice::new(&record)],
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// One record read from a links channel.
pub(crate) enum Received {
    /// A link to the process of `lane` and `epoch`.
    Link {
        /// The peer's lane.
        lane: usize,
        /// The peer's epoch.
        epoch: u64,
        /// This process's end of the link.
        fd: OwnedFd,
    },
    /// A record without a descriptor, or cut: skipped.
    Garbled,
    /// The primary closed the channel.
    End,
}

/// Reads the next record of `channel` without waiting (`EAGAIN`: none).
pub(crate) fn recv_link(channel: BorrowedFd<'_>) -> nix::Result<Received> {
    let mut record = [0u8; RECORD];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let mut iov = [IoSliceMut::new(&mut record)];
    let msg = recvmsg::<()>(
        channel.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let bytes = msg.bytes;
    let mut fd = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed this descriptor in this
                // process for us; nothing else owns it.
                let owned = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
                // One per record is all the primary sends; any other is closed.
                fd.get_or_insert(owned);
            }
        }
    }
    if bytes == 0 && fd.is_none() {
        return Ok(Received::End);
    }
    match (bytes, fd) {
        (RECORD, Some(fd)) => Ok(Received::Link {
            lane: u32::from_le_bytes(record[..4].try_into().expect("4 bytes")) as usize,
            epoch: u64::from_le_bytes(record[8..].try_into().expect("8 bytes")),
            fd,
        }),
        _ => Ok(Received::Garbled),
    }
}

/// This process's link to the process of one lane.
struct Peer {
    epoch: u64,
    sender: IpcSender,
    /// Its backlog reached the limit, and the primary was told: nothing more
    /// is written to it (the primary kills its process).
    stuck: bool,
}

/// A worker process's direct links, by lane.
pub(crate) struct Direct {
    channel: OwnedFd,
    peers: Mutex<Vec<Option<Peer>>>,
    /// Where the links' tasks run (a broadcast may be sent from any thread).
    runtime: tokio::runtime::Handle,
    link: Weak<ClusterLink>,
    max_queued: usize,
    /// Broadcasts received over links.
    received: AtomicU64,
    /// Broadcasts sent over links (one per receiving process).
    sent: AtomicU64,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Direct").finish_non_exhaustive()
    }
}

impl Direct {
    /// The links of `link`'s process, received on `channel` (non-blocking), for
    /// `lanes` lanes; their backlog is bounded by `max_queued` bytes. Must be
    /// called in the runtime that will read the links.
    pub(crate) fn start(
        link: &Arc<ClusterLink>,
        channel: OwnedFd,
        lanes: usize,
        max_queued: usize,
    ) -> std::io::Result<Arc<Direct>> {
        // SAFETY: an `OwnedFd` keeps its descriptor open, and the same, until
        // it is dropped with the `AsyncFd`.
        let watched =
            unsafe { AsyncFd::register_with_interest(channel.try_clone()?, Interest::READABLE) }
                .map_err(std::io::Error::from)?;
        let direct = Arc::new(Direct {
            channel,
            peers: Mutex::new((0..lanes).map(|_| None).collect()),
            runtime: tokio::runtime::Handle::current(),
            link: Arc::downgrade(link),
            max_queued,
            received: AtomicU64::new(0),
            sent: AtomicU64::new(0),
        });
        tokio::spawn(watch(Arc::downgrade(&direct), watched));
        Ok(direct)
    }

    fn peers(&self) -> MutexGuard<'_, Vec<Option<Peer>>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Broadcasts received over links.
    pub(crate) fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Frames sent over links.
    pub(crate) fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Writes `frame` to the link of every lane in `lanes` whose process lives
    /// (by `table`'s epochs), reading the channel first if one is missing;
    /// returns the lanes it was written to. A broadcast is never rerouted
    /// (through the primary, it could be overtaken by a later one sent
    /// straight): a link whose backlog reached the limit is skipped, its
    /// process does not read. The first time, the primary is told, which kills
    /// that process; until it is gone, what is sent to it is dropped (its
    /// clients reconnect, as when the primary's own backlog to it overflows).
    pub(crate) fn send(&self, table: &HintTable, lanes: &LaneSet, frame: &EncodedFrame) -> LaneSet {
        let mut written = LaneSet::default();
        // Rare: allocates only when a link is found stuck.
        let mut stuck = Vec::new();
        {
            let mut peers = self.peers();
            let mut read = false;
            for lane in lanes.iter() {
                let epoch = table.epoch(lane);
                if epoch == 0 || lane >= peers.len() {
                    // No process on this lane.
                    continue;
                }
                let linked =
                    |p: &[Option<Peer>]| p[lane].as_ref().is_some_and(|p| p.epoch == epoch);
                if !linked(&peers) && !read {
                    // Its record is in the channel (written before its process started).
                    self.read_channel(&mut peers);
                    read = true;
                }
                let Some(peer) = peers[lane].as_mut().filter(|p| p.epoch == epoch) else {
                    debug!(target: "socket.io:adapter", lane, "no link to lane {lane}: its process is gone");
                    continue;
                };
                if peer.stuck {
                    continue;
                }
                match peer.sender.send_frame(frame.clone()) {
                    Ok(()) => {
                        self.sent.fetch_add(1, Ordering::Relaxed);
                        written.insert(lane);
                    }
                    Err(SendError::Backlog { .. }) => {
                        peer.stuck = true;
                        stuck.push((lane, epoch));
                    }
                    Err(err) => {
                        // Its peer is gone: the primary reports it.
                        debug!(target: "socket.io:adapter", lane, "direct link dropped: {err}");
                        peers[lane] = None;
                    }
                }
            }
        }
        for (lane, epoch) in stuck {
            warn!(target: "socket.io:adapter", lane, epoch, "the process of lane {lane} does not read its direct link (backlog over {} bytes): told the primary; what is sent to it is dropped until it is gone", self.max_queued);
            if let Some(link) = self.link.upgrade() {
                link.send(Message::LinkStuck {
                    lane: lane as u32,
                    epoch,
                });
            }
        }
        written
    }

    /// Takes in every link record waiting in the channel; `false` once the
    /// channel ended.
    fn read_channel(&self, peers: &mut [Option<Peer>]) -> bool {
        loop {
            match recv_link(self.channel.as_fd()) {
                Ok(Received::Link { lane, epoch, fd }) if lane < peers.len() => {
                    match self.connect(lane, epoch, fd) {
                        Ok(sender) => {
                            peers[lane] = Some(Peer {
                                epoch,
                                sender,
                                stuck: false,
                            })
                        }
                        Err(err) => {
                            warn!(target: "socket.io:adapter", lane, "cannot use the direct link to lane {lane}: {err}")
                        }
                    }
                }
                Ok(Received::Link { lane, .. }) => {
                    warn!(target: "socket.io:adapter", lane, "a direct link to lane {lane}, past the table: ignored")
                }
                Ok(Received::Garbled) => {
                    warn!(target: "socket.io:adapter", "a garbled record on the links channel: ignored")
                }
                Ok(Received::End) => return false,
                Err(Errno::EAGAIN) => return true,
                Err(Errno::EINTR) => {}
                Err(err) => {
                    warn!(target: "socket.io:adapter", "links channel: {err}");
                    return false;
                }
            }
        }
    }

    /// Starts using the link `fd` to `lane`: its reading task, and its sender.
    fn connect(&self, lane: usize, epoch: u64, fd: OwnedFd) -> std::io::Result<IpcSender> {
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(true)?;
        let _in_runtime = self.runtime.enter();
        let stream = tokio::net::UnixStream::from_std(stream)?;
        let (reader, sender) =
            IpcConnection::with_limits(stream, rsio_ipc::DEFAULT_MAX_FRAME_LENGTH, self.max_queued)
                .into_split();
        self.runtime
            .spawn(read_link(self.link.clone(), lane, epoch, reader));
        Ok(sender)
    }

    /// The link to `lane` of `epoch` ended: forgets it (not a newer one).
    fn forget(&self, lane: usize, epoch: u64) {
        let mut peers = self.peers();
        if peers
            .get(lane)
            .and_then(Option::as_ref)
            .is_some_and(|p| p.epoch == epoch)
        {
            peers[lane] = None;
        }
    }
}

/// Where a broadcast of this worker goes (see [`ClusterLink::route`]).
pub(super) enum Route {
    /// Nowhere else: no other process has a recipient.
    Here,
    /// Straight to the processes of these lanes.
    Direct(LaneSet),
    /// Through the primary.
    Primary,
}

impl ClusterLink {
    /// Sends this worker's broadcasts that need no sequencing straight to the
    /// processes with recipients, over the links received on `channel` (see
    /// [`super::direct`]); needs the hints (a second call, or one without
    /// hints, is ignored). Must be called in the worker's runtime.
    pub(crate) fn use_direct(
        self: &Arc<Self>,
        channel: std::os::fd::OwnedFd,
        max_queued: usize,
    ) -> std::io::Result<()> {
        let Some(lanes) = self.hints.get().map(|h| h.table().lanes()) else {
            return Ok(());
        };
        if self.direct.get().is_none() {
            let _ = self
                .direct
                .set(Direct::start(self, channel, lanes, max_queued)?);
        }
        Ok(())
    }

    pub(super) fn direct(&self) -> Option<&Arc<Direct>> {
        self.direct.get()
    }

    /// Where a broadcast of this worker to `rooms` of `nsp` (none: every
    /// socket) that needs no sequencing goes: nowhere else (counted in
    /// [`ClusterLink::kept_local`]), straight to the processes with recipients
    /// (the hints' lanes), or through the primary (no links or hints, a room
    /// forced through it).
    pub(super) fn route(&self, nsp: &str, rooms: &[String]) -> Route {
        let Some(hints) = self.hints.get() else {
            return Route::Primary;
        };
        match hints.reach(nsp, rooms) {
            Reach::Lanes(set) if set.is_empty() => {
                self.kept_local.fetch_add(1, Ordering::Relaxed);
                Route::Here
            }
            Reach::Lanes(set) if self.direct.get().is_some() => Route::Direct(set),
            _ => Route::Primary,
        }
    }

    /// Writes `message` (encoded once) to the direct links of `lanes` (see
    /// [`Direct::send`]); returns the lanes it was written to. `None`, and
    /// nothing sent, without links (see [`ClusterLink::route`]).
    pub(super) fn send_direct(&self, lanes: &LaneSet, message: &Message) -> Option<LaneSet> {
        let (direct, hints) = (self.direct.get()?, self.hints.get()?);
        match rsio_ipc::EncodedFrame::encode(message, rsio_ipc::DEFAULT_MAX_FRAME_LENGTH) {
            Ok(frame) => Some(direct.send(hints.table(), lanes, &frame)),
            Err(err) => {
                debug!(target: "socket.io:adapter", "direct broadcast: {err}");
                Some(LaneSet::default())
            }
        }
    }

    /// Broadcasts of other workers received straight from them, and frames
    /// this worker sent straight to others (one per receiving process).
    pub fn direct_counts(&self) -> (u64, u64) {
        self.direct
            .get()
            .map_or((0, 0), |d| (d.received(), d.sent()))
    }
}

/// Reads the channel whenever it is readable, until it ends.
async fn watch(direct: Weak<Direct>, channel: AsyncFd<OwnedFd>) {
    loop {
        let Ok(mut guard) = channel.readable().await else {
            return;
        };
        // Cleared before reading: a record that comes meanwhile wakes us again.
        guard.clear_ready();
        let Some(direct) = direct.upgrade() else {
            return;
        };
        let open = direct.read_channel(&mut direct.peers());
        if !open {
            debug!(target: "socket.io:adapter", "the links channel ended");
            return;
        }
    }
}

/// Hands what a peer sends on its link to the link's adapter, until it ends.
async fn read_link(link: Weak<ClusterLink>, lane: usize, epoch: u64, mut reader: IpcReader) {
    while let Some(item) = reader.next().await {
        let Some(cluster) = link.upgrade() else {
            return;
        };
        match item {
            Ok(Message::Broadcast(b)) if b.ack.is_none() && b.offset.is_none() => {
                if let Some(direct) = cluster.direct() {
                    direct.received.fetch_add(1, Ordering::Relaxed);
                }
                cluster.dispatch(Message::Broadcast(b));
            }
            Ok(other) => {
                warn!(target: "socket.io:adapter", lane, "{} on a direct link: closing it", other.kind_name());
                break;
            }
            Err(err) => {
                debug!(target: "socket.io:adapter", lane, "direct link: {err}");
                break;
            }
        }
    }
    if let Some(direct) = link.upgrade().as_deref().and_then(ClusterLink::direct) {
        direct.forget(lane, epoch);
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        time::Duration,
    };

    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    use super::*;

    fn channel() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn a_link_record_carries_its_lane_epoch_and_descriptor() {
        let (primary, worker) = channel();
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        send_link(primary.as_fd(), 5, 42, theirs.as_fd()).unwrap();
        drop(theirs);
        let Received::Link { lane, epoch, fd } = recv_link(worker.as_fd()).unwrap() else {
            panic!("expected a link");
        };
        assert_eq!((lane, epoch), (5, 42));
        // The descriptor received is the peer's end of the pair.
        let mut link = std::os::unix::net::UnixStream::from(fd);
        link.write_all(b"hi").unwrap();
        let mut buf = [0u8; 2];
        (&ours).read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        assert!(
            matches!(recv_link(worker.as_fd()), Err(Errno::EAGAIN)),
            "nothing more"
        );
        drop(primary);
        assert!(matches!(recv_link(worker.as_fd()), Ok(Received::End)));
    }

    /// A peer's broadcast as a link carries it: `ack` and `offset` as given.
    fn broadcast(ack: Option<(u16, u64, u64)>, offset: Option<u64>) -> Message {
        Message::Broadcast(rsio_ipc::Broadcast {
            nsp: "/".into(),
            target: rsio_ipc::Target::default(),
            ack,
            offset,
            frames: vec![rsio_ipc::Frame::Text(bytes::Bytes::from_static(
                b"42[\"e\"]",
            ))],
        })
    }

    #[tokio::test]
    async fn a_link_that_carries_anything_but_a_plain_broadcast_is_closed() {
        for bad in [
            broadcast(Some((1, 7, 3)), None),
            broadcast(None, Some(9)),
            Message::SocketsJoin {
                nsp: "/".into(),
                target: rsio_ipc::Target::default(),
                rooms: vec!["r".into()],
            },
        ] {
            let (to_primary, _primary) = tokio::net::UnixStream::pair().unwrap();
            let (_, sender) = IpcConnection::new(to_primary).into_split();
            let link = ClusterLink::new(0, 2, sender);
            let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
            let (reader, _) = IpcConnection::new(ours).into_split();
            let peer = IpcConnection::new(theirs);
            let task = tokio::spawn(read_link(Arc::downgrade(&link), 1, 1, reader));
            // A plain broadcast is taken, and the link stays open.
            peer.sender().send(broadcast(None, None)).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
            assert!(!task.is_finished(), "a plain broadcast closed the link");
            let kind = bad.kind_name();
            peer.sender().send(bad).unwrap();
            tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .unwrap_or_else(|_| panic!("{kind} on a link: still open"))
                .unwrap();
        }
    }

    /// A peer process that reads its link to the end, counting the bytes.
    fn reading(peer: std::os::unix::net::UnixStream) -> Arc<AtomicU64> {
        let read = Arc::new(AtomicU64::new(0));
        let count = read.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = (&peer).read(&mut buf) {
                count.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
        read
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_link_whose_peer_does_not_read_is_skipped_and_reported_once() {
        const MAX_QUEUED: usize = 64 * 1024;
        let (to_primary, primary) = tokio::net::UnixStream::pair().unwrap();
        let (_, sender) = IpcConnection::new(to_primary).into_split();
        let (mut from_worker, _) = IpcConnection::new(primary).into_split();
        let link = ClusterLink::new(0, 3, sender);
        let (table, _fd) = HintTable::create(6).unwrap();
        let (channel, theirs) = channel();
        let direct = Direct::start(&link, theirs, 6, MAX_QUEUED).unwrap();
        // Lane 1 reads its link; lane 2 never does.
        let (a1, b1) = std::os::unix::net::UnixStream::pair().unwrap();
        let (a2, _b2) = std::os::unix::net::UnixStream::pair().unwrap();
        for (lane, epoch, fd) in [(1, 11, &a1), (2, 12, &a2)] {
            table.set_epoch(lane, epoch);
            send_link(channel.as_fd(), lane, epoch, fd.as_fd()).unwrap();
        }
        drop((a1, a2));
        let read_by_1 = reading(b1);
        let frame = EncodedFrame::encode(
            &Message::Broadcast(rsio_ipc::Broadcast {
                nsp: "/".into(),
                target: rsio_ipc::Target::default(),
                ack: None,
                offset: None,
                frames: vec![rsio_ipc::Frame::Text(bytes::Bytes::from(
                    "x".repeat(16 * 1024),
                ))],
            }),
            rsio_ipc::DEFAULT_MAX_FRAME_LENGTH,
        )
        .unwrap();
        let mut both = LaneSet::default();
        both.insert(1);
        both.insert(2);
        let only_1 = {
            let mut s = LaneSet::default();
            s.insert(1);
            s
        };
        // Lane 2's socket buffer, then its backlog, fill up: from then on the
        // frame goes to lane 1 only.
        let mut sent = 0u64;
        let mut stuck_after = None;
        for i in 0..1000 {
            let written = direct.send(&table, &both, &frame);
            assert!(written.contains(1), "lane 1 reads: it gets every frame");
            sent += 1;
            if !written.contains(2) {
                stuck_after = Some(i);
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            stuck_after.is_some(),
            "lane 2 never reached its backlog limit"
        );
        for _ in 0..20 {
            assert_eq!(direct.send(&table, &both, &frame), only_1);
            sent += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Lane 1 got every frame.
        let expected = sent * frame.len() as u64;
        for _ in 0..500 {
            if read_by_1.load(Ordering::Relaxed) >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(read_by_1.load(Ordering::Relaxed), expected);
        // The primary was told once, with lane 2's epoch.
        let told = tokio::time::timeout(Duration::from_secs(2), from_worker.next())
            .await
            .expect("a report")
            .expect("open")
            .unwrap();
        assert_eq!(told, Message::LinkStuck { lane: 2, epoch: 12 });
        let more = tokio::time::timeout(Duration::from_millis(300), from_worker.next()).await;
        assert!(more.is_err(), "reported again: {more:?}");
    }

    #[test]
    fn a_record_without_a_descriptor_is_skipped() {
        let (primary, worker) = channel();
        nix::sys::socket::send(primary.as_raw_fd(), &[0u8; RECORD], MsgFlags::MSG_NOSIGNAL)
            .unwrap();
        assert!(matches!(recv_link(worker.as_fd()), Ok(Received::Garbled)));
    }
}
