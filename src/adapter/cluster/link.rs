//! The worker's end of the cluster: what it sends to the primary, and what it
//! does with what the primary relays.

use std::{
    collections::{BTreeSet, HashMap, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    time::{Duration, Instant},
};

use rsio_ipc::{
    Broadcast, EventPayload, Frame as IpcFrame, IpcSender, Message, PendingRequests, RequestId,
    Session, SocketInfo as IpcSocketInfo, WorkerIndex,
};
use tokio::sync::oneshot;
use tracing::debug;

use super::super::{
    local::{InterestSink, RoomPresence},
    EncodedPacket, LocalAdapter, RecoveryConfig, RemoteAck,
};
use super::{
    acks::{Forward, ForwardKey, PendingAck, Reply},
    direct::Direct,
    encoded,
    hints::Hints,
    options, ClusterAdapter,
};
use crate::{
    parser::Args,
    server::{AckSender, Server, ServerInnerRef},
};

/// How long a worker forwards the client acks of a broadcast it received.
const REMOTE_ACK_WINDOW: Duration = Duration::from_secs(120);
/// Recoverable packets a worker remembers, for sockets whose restore raced with them.
const RECENT_PACKETS: usize = 4096;
const RECENT_WINDOW: Duration = Duration::from_secs(10);
/// How long a restore waits for the primary.
pub(super) const RESTORE_TIMEOUT: Duration = Duration::from_secs(5);

/// A recoverable packet as this worker received it from the primary.
pub(super) struct Recent {
    pub(super) offset: u64,
    pub(super) at: Instant,
    pub(super) nsp: String,
    pub(super) rooms: Vec<String>,
    pub(super) except: Vec<String>,
    pub(super) packet: EncodedPacket,
}

pub(super) type RestoreAnswer = (Option<Session>, Vec<Vec<IpcFrame>>, u64);

/// [`ClusterLink::attach`] was given a second server.
#[derive(Debug, thiserror::Error)]
#[error("the cluster link already carries the traffic of another server")]
pub struct AlreadyAttached;

/// One worker's connection to the cluster, shared by the adapters of all its namespaces.
pub struct ClusterLink {
    pub(super) index: WorkerIndex,
    pub(super) sender: IpcSender,
    pub(super) peers: Mutex<BTreeSet<WorkerIndex>>,
    pub(super) fetches: PendingRequests<Vec<IpcSocketInfo>>,
    pub(super) server_side: PendingRequests<EventPayload>,
    /// This worker's acked broadcasts waiting for answers (see [`super::acks`]).
    pub(super) broadcast_acks: Mutex<HashMap<RequestId, PendingAck>>,
    /// Other workers' acked broadcasts whose client acks this worker forwards.
    pub(super) forwards: Mutex<HashMap<ForwardKey, Forward>>,
    pub(super) next_forward: AtomicU64,
    pub(super) remote_ack_window: Duration,
    pub(super) next_broadcast: AtomicU64,
    server: OnceLock<ServerInnerRef>,
    pub(super) recovery: OnceLock<RecoveryConfig>,
    restores: Mutex<HashMap<RequestId, oneshot::Sender<RestoreAnswer>>>,
    recent: Mutex<VecDeque<Recent>>,
    /// Operations of other workers relayed here (see [`ClusterLink::relayed`]).
    relayed: AtomicU64,
    /// The cluster's interest hint table, when the primary passed one.
    pub(super) hints: OnceLock<Hints>,
    /// Room broadcasts the hints kept on this worker (see [`ClusterLink::kept_local`]).
    pub(super) kept_local: AtomicU64,
    /// The direct links to the other worker processes, when the primary set them up.
    pub(super) direct: OnceLock<Arc<Direct>>,
    /// Slots sent to through the primary while forced (see [`super::sticky`]).
    pub(super) sticky: super::sticky::Sticky,
}

/// The first id of this process's requests: its pid in the high half, so
/// that two live processes of one worker index never use the same ids.
fn first_request_id() -> RequestId {
    (u64::from(std::process::id()) << 32) | 1
}

impl ClusterLink {
    /// The link of worker `index` in a cluster of `count`, all assumed alive.
    pub fn new(index: WorkerIndex, count: usize, sender: IpcSender) -> Arc<ClusterLink> {
        Self::with_remote_ack_window(index, count, sender, REMOTE_ACK_WINDOW)
    }

    pub(super) fn with_remote_ack_window(
        index: WorkerIndex,
        count: usize,
        sender: IpcSender,
        remote_ack_window: Duration,
    ) -> Arc<ClusterLink> {
        let peers = (0..count as WorkerIndex).filter(|&w| w != index).collect();
        // Answers are routed by worker index, and during a reload the old and
        // the new process of one index both ask: their ids must not meet.
        let first = first_request_id();
        Arc::new(ClusterLink {
            index,
            sender,
            peers: Mutex::new(peers),
            fetches: PendingRequests::starting_at(first),
            server_side: PendingRequests::starting_at(first),
            broadcast_acks: Mutex::default(),
            forwards: Mutex::default(),
            next_forward: AtomicU64::new(0),
            remote_ack_window,
            next_broadcast: AtomicU64::new(first),
            server: OnceLock::new(),
            recovery: OnceLock::new(),
            restores: Mutex::default(),
            recent: Mutex::default(),
            relayed: AtomicU64::new(0),
            hints: OnceLock::new(),
            kept_local: AtomicU64::new(0),
            direct: OnceLock::new(),
            sticky: super::sticky::Sticky::default(),
        })
    }

    /// Uses the cluster's interest hint table (before any adapter has rooms):
    /// a room broadcast that no other process can have recipients of then stays
    /// on this worker. A second table is ignored.
    pub(crate) fn use_hints(&self, hints: Hints) {
        let _ = self.hints.set(hints);
    }

    /// Sends `operation` to the primary, having first forced the rooms it
    /// forces (see [`super::hints::forced_by`]): broadcasts to them, from any
    /// process, go through the primary, behind it, until every worker it
    /// reaches has handled it.
    pub(super) fn send_forcing(&self, operation: Message) {
        if let (Some(hints), Some((nsp, rooms))) =
            (self.hints.get(), super::hints::forced_by(&operation))
        {
            let table = hints.table();
            table.force(&table.forced_slots(nsp, rooms));
        }
        self.send(operation);
    }

    /// Room broadcasts of this worker that no other worker had recipients of,
    /// by the interest hints: they never left this process.
    pub fn kept_local(&self) -> u64 {
        self.kept_local.load(Ordering::Relaxed)
    }

    /// Turns connection state recovery on: the primary numbers recoverable
    /// packets and keeps sessions, so they survive any one worker.
    pub fn enable_recovery(&self, config: RecoveryConfig) {
        if self.recovery.set(config).is_ok() {
            self.send(Message::RecoveryOn {
                nsp: "/".into(),
                max_disconnection_ms: config.max_disconnection_duration.as_millis() as u64,
            });
        }
    }

    pub(super) fn recent(&self) -> MutexGuard<'_, VecDeque<Recent>> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn restores(
        &self,
    ) -> MutexGuard<'_, HashMap<RequestId, oneshot::Sender<RestoreAnswer>>> {
        self.restores.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The adapter of namespace `nsp` on this worker.
    pub fn adapter(self: &Arc<Self>, nsp: &str) -> Arc<ClusterAdapter> {
        Arc::new(ClusterAdapter {
            nsp: nsp.to_string(),
            local: LocalAdapter::with_interest(self.interest_sink(nsp, true)),
            link: Arc::downgrade(self),
        })
    }

    /// With `--redis`: the sink that counts the rooms of namespace `nsp` of
    /// this worker's Redis adapter in the interest hints, for the primary to
    /// forward a room broadcast read on Redis only to the workers with
    /// members. No report to the primary: it reads the hints. `None` without
    /// hints (the primary then forwards everything to everyone).
    pub(crate) fn redis_interest(self: &Arc<Self>, nsp: &str) -> Option<InterestSink> {
        self.hints.get()?;
        Some(self.interest_sink(nsp, false))
    }

    /// Rooms of `nsp` appearing and disappearing here: counted in the hints
    /// (in before the join that made the room returns, out after its last
    /// member left) and, when `report`, told to the primary, which then
    /// relays room operations only to the workers with members. In before
    /// the report, out after it, so that the hints never count fewer
    /// processes than the primary knows of. A hold (a session being
    /// restored, see [`super::super::RoomHold`]) is counted, never reported.
    fn interest_sink(self: &Arc<Self>, nsp: &str, report: bool) -> InterestSink {
        let link = Arc::downgrade(self);
        let name = nsp.to_string();
        Box::new(move |room: &str, change: RoomPresence| {
            let Some(link) = link.upgrade() else { return };
            let hints = link.hints.get();
            if let (RoomPresence::Appeared | RoomPresence::Held, Some(h)) = (change, hints) {
                h.appeared(&name, room);
            }
            let present = match change {
                RoomPresence::Appeared => Some(true),
                RoomPresence::Gone => Some(false),
                RoomPresence::Confirmed(present) => Some(present),
                RoomPresence::Held | RoomPresence::Released => None,
            };
            if let (true, Some(present)) = (report, present) {
                link.send(Message::RoomInterest {
                    nsp: name.clone(),
                    room: room.to_string(),
                    present,
                });
            }
            if let (RoomPresence::Gone | RoomPresence::Released, Some(h)) = (change, hints) {
                h.gone(&name, room);
            }
        })
    }

    /// The server whose namespaces receive what other workers send. A link has
    /// one: messages between workers name a namespace, not a server.
    pub fn attach(&self, server: &Server) -> Result<(), AlreadyAttached> {
        self.server
            .set(server.inner_ref())
            .map_err(|_| AlreadyAttached)
    }

    pub(super) fn peers(&self) -> MutexGuard<'_, BTreeSet<WorkerIndex>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn send(&self, message: Message) {
        if let Err(err) = self.sender.send(message) {
            debug!(target: "socket.io:adapter", "ipc send: {err}");
        }
        // Behind the broadcast that found its slots held (see [`super::sticky`]).
        if let Some(id) = self.sticky.take_ask() {
            if let Err(err) = self.sender.send(Message::FenceRequest { id }) {
                debug!(target: "socket.io:adapter", "ipc send: {err}");
            }
        }
    }

    fn namespace(&self, nsp: &str) -> Option<crate::server::Namespace> {
        self.server.get()?.namespace(nsp)
    }

    /// How many operations of other workers aimed at sockets (broadcasts,
    /// joins, leaves, disconnects, fetches) reached this worker, relayed by the
    /// primary or straight over a direct link (those are also counted in
    /// [`ClusterLink::direct_counts`]). One aimed at rooms reaches only workers
    /// with members of them, so a worker without members sees none.
    pub fn relayed(&self) -> u64 {
        self.relayed.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Handles a message relayed by the primary.
    pub fn dispatch(self: &Arc<Self>, message: Message) {
        if matches!(
            message,
            Message::Broadcast(_)
                | Message::SocketsJoin { .. }
                | Message::SocketsLeave { .. }
                | Message::DisconnectSockets { .. }
                | Message::FetchSockets { .. }
        ) {
            self.relayed
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        match message {
            Message::Broadcast(b) => {
                crate::metrics::add(crate::metrics::counter::BROADCASTS_RECEIVED, 1);
                self.on_broadcast(b, None)
            }
            Message::SocketsJoin { nsp, target, rooms } => {
                if let Some(ns) = self.namespace(&nsp) {
                    ns.local_sockets_join(&options(&target), &rooms);
                    // The primary counted this worker in `rooms` when it relayed
                    // the join (so what the joiner sends next reaches us): correct it.
                    ns.adapter().confirm_rooms(&rooms);
                }
            }
            Message::SocketsLeave { nsp, target, rooms } => {
                if let Some(ns) = self.namespace(&nsp) {
                    ns.local_sockets_leave(&options(&target), &rooms);
                }
            }
            Message::DisconnectSockets { nsp, target, close } => {
                if let Some(ns) = self.namespace(&nsp) {
                    ns.local_disconnect_sockets(&options(&target), close);
                }
            }
            Message::FetchSockets {
                nsp,
                target,
                from,
                request,
            } => {
                let sockets = self
                    .namespace(&nsp)
                    .map(|ns| {
                        ns.select(&options(&target))
                            .into_iter()
                            .map(|s| IpcSocketInfo {
                                id: s.id().to_string(),
                                handshake: s.handshake().to_json().to_string().into_bytes(),
                                rooms: s.rooms(),
                                data: s.data_value().to_string().into_bytes(),
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.send(Message::FetchSocketsResponse {
                    to: from,
                    from: self.index,
                    request,
                    sockets,
                });
            }
            Message::ServerSideEmit {
                nsp,
                event,
                payload,
                from,
                request,
            } => {
                let Some(ns) = self.namespace(&nsp) else {
                    return;
                };
                let args = Args::from_raw(payload.json, payload.attachments);
                let ack = match request {
                    Some(request) => {
                        let (tx, rx) = oneshot::channel::<Args>();
                        let sender = self.sender.clone();
                        let index = self.index;
                        tokio::spawn(async move {
                            if let Ok(args) = rx.await {
                                let (json, attachments) = args.into_parts();
                                let _ = sender.send(Message::ServerSideEmitResponse {
                                    to: from,
                                    from: index,
                                    request,
                                    payload: EventPayload { json, attachments },
                                });
                            }
                        });
                        AckSender::channel(tx)
                    }
                    None => AckSender::none(),
                };
                ns.on_server_side_emit(&event, args, ack);
            }
            Message::FetchSocketsResponse {
                from,
                request,
                sockets,
                ..
            } => {
                self.fetches.respond(request, from, sockets);
            }
            Message::ServerSideEmitResponse {
                from,
                request,
                payload,
                ..
            } => {
                self.server_side.respond(request, from, payload);
            }
            Message::BroadcastClientCount {
                from,
                request,
                count,
                ..
            } => self.forward_ack(request, RemoteAck::ClientCount(from, count)),
            Message::BroadcastAck {
                request, payload, ..
            } => self.forward_ack(
                request,
                RemoteAck::Ack(Args::from_raw(payload.json, payload.attachments)),
            ),
            Message::WorkerExited { worker } => {
                self.peers().remove(&worker);
                self.fetches.worker_gone(worker);
                self.server_side.worker_gone(worker);
                self.acks_worker_gone(worker);
            }
            Message::RestoreSessionResponse {
                request,
                session,
                missed,
                horizon,
                ..
            } => {
                let waiter = self.restores().remove(&request);
                let late = match waiter {
                    Some(tx) => tx.send((session, missed, horizon)).err().and_then(|a| a.0),
                    None => session,
                };
                // Nobody waits for this restore any more: the primary counted
                // this worker in the session's rooms until told otherwise.
                if let Some(s) = late {
                    if let Some(ns) = self.namespace(&s.nsp) {
                        ns.adapter().confirm_rooms(&s.rooms);
                    }
                }
            }
            Message::WorkerJoined { worker } => {
                if worker != self.index {
                    self.peers().insert(worker);
                }
            }
            // Everything the primary sent before it is handled (in order, above):
            // the operation it follows is applied here, and its force can end.
            Message::Fence { id } => self.send(Message::Fence { id }),
            Message::FenceDone { id } => self.sticky.done(id),
            other => debug!(target: "socket.io:adapter", kind = other.kind_name(), "ignored"),
        }
    }

    /// Another worker's broadcast straight over its direct link, which the
    /// answers of an acked one go back on (`reply`).
    pub(super) fn receive_direct(self: &Arc<Self>, b: Broadcast, reply: &IpcSender) {
        self.relayed.fetch_add(1, Ordering::Relaxed);
        crate::metrics::add(crate::metrics::counter::BROADCASTS_RECEIVED, 1);
        self.on_broadcast(b, Some(reply));
    }

    /// Delivers a broadcast of another worker; the answers of an acked one go
    /// to its emitter over `link` (the direct link it came on), or through the
    /// primary.
    fn on_broadcast(self: &Arc<Self>, b: Broadcast, link: Option<&IpcSender>) {
        let Some(ns) = self.namespace(&b.nsp) else {
            return;
        };
        let Some(packet) = encoded(b.frames) else {
            debug!(target: "socket.io:adapter", "broadcast with a frame that is not UTF-8 text");
            return;
        };
        let opts = options(&b.target);
        if let (Some(offset), true) = (b.offset, self.recovery.get().is_some()) {
            let now = Instant::now();
            let mut recent = self.recent();
            while recent.len() >= RECENT_PACKETS
                || recent
                    .front()
                    .is_some_and(|r| now.duration_since(r.at) > RECENT_WINDOW)
            {
                recent.pop_front();
            }
            recent.push_back(Recent {
                offset,
                at: now,
                nsp: b.nsp.clone(),
                rooms: opts.rooms.clone(),
                except: opts.except.clone(),
                packet: packet.clone(),
            });
        }
        let Some((from, request, ack_id)) = b.ack else {
            ns.deliver(&packet, &opts, None);
            return;
        };
        // Only an acked broadcast keeps its way back.
        let reply = link.map_or(Reply::Primary, |s| Reply::Link(s.clone()));
        self.deliver_acked(&ns, &packet, &opts, (from, request, ack_id), reply);
    }
}
