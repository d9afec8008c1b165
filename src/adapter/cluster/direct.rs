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
//! A link carries [`Message::Broadcast`]s without offsets, each frame encoded
//! once by the sender and written as it is to every link, and, the other way,
//! the answers to those with acks ([`Message::BroadcastClientCount`],
//! [`Message::BroadcastAck`], see [`super::acks`]); anything else closes it,
//! as does a message that says it is from another worker. A link whose
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
use rsio_ipc::{
    EncodedFrame, IpcConnection, IpcReader, IpcSender, Message, SendError, WorkerIndex,
};
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
    /// Answers to this worker's acked broadcasts received over links.
    answers: AtomicU64,
    /// Lanes of the hint table (see [`super::hints::worker_of_lane`]).
    lanes: usize,
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
            answers: AtomicU64::new(0),
            lanes,
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

    /// Answers to acked broadcasts received over links.
    pub(crate) fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
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
        let peer = LinkPeer {
            lane,
            epoch,
            worker: super::hints::worker_of_lane(lane, self.lanes) as WorkerIndex,
        };
        self.runtime
            .spawn(read_link(self.link.clone(), peer, reader, sender.clone()));
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
            Reach::Lanes(set) if self.direct.get().is_some() => {
                if self.sticky.is_empty() {
                    return Route::Direct(set);
                }
                // Sent through the primary while forced: straight again only
                // behind a fence of this worker's (see [`super::sticky`]).
                let table = hints.table();
                if self.sticky.holds(&table.forced_slots(nsp, rooms)) {
                    Route::Primary
                } else {
                    Route::Direct(set)
                }
            }
            Reach::Primary if self.direct.get().is_some() && !hints.table().disabled() => {
                // A forced room: what follows must not overtake this one.
                let table = hints.table();
                self.sticky
                    .sent_through_primary(&table.forced_slots(nsp, rooms));
                Route::Primary
            }
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

    /// Answers to this worker's acked broadcasts (client counts and client
    /// acks) that came straight back over the direct links, not through the
    /// primary.
    pub fn direct_answers(&self) -> u64 {
        self.direct.get().map_or(0, |d| d.answers())
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

/// The process at the other end of a link.
#[derive(Debug, Clone, Copy)]
struct LinkPeer {
    lane: usize,
    epoch: u64,
    /// Its worker index: what it must say it is.
    worker: WorkerIndex,
}

/// Hands what a peer sends on its link to the link's adapter, until it ends;
/// answers to an acked broadcast go back on `reply`, the link's other half.
/// Then the acked broadcasts written to it stop waiting for its answers.
async fn read_link(
    link: Weak<ClusterLink>,
    peer: LinkPeer,
    mut reader: IpcReader,
    reply: IpcSender,
) {
    let LinkPeer {
        lane,
        epoch,
        worker,
    } = peer;
    while let Some(item) = reader.next().await {
        let Some(cluster) = link.upgrade() else {
            return;
        };
        let direct = cluster.direct();
        match item {
            // Its own broadcasts only: answers go back here, to it.
            Ok(Message::Broadcast(b))
                if b.offset.is_none() && b.ack.is_none_or(|(from, ..)| from == worker) =>
            {
                if let Some(direct) = direct {
                    direct.received.fetch_add(1, Ordering::Relaxed);
                }
                cluster.receive_direct(b, &reply);
            }
            Ok(m @ (Message::BroadcastClientCount { .. } | Message::BroadcastAck { .. })) => {
                let kind = m.kind_name();
                // Counted before the emitter may see it (and its caller read the count).
                if let Some(direct) = direct {
                    direct.answers.fetch_add(1, Ordering::Relaxed);
                }
                if !cluster.direct_answer(lane, worker, m) {
                    warn!(target: "socket.io:adapter", lane, "{kind} on a direct link from worker {worker}, not from it or not to this worker: closing it");
                    break;
                }
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
    if let Some(cluster) = link.upgrade() {
        if let Some(direct) = cluster.direct() {
            direct.forget(lane, epoch);
        }
        cluster.acks_link_gone(lane, worker);
    }
}

#[cfg(test)]
#[path = "direct_tests.rs"]
mod tests;
