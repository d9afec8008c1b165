//! Broadcasts with acks across the workers. The emitter keeps one
//! [`PendingAck`] per broadcast that waits for answers; each worker it reached
//! answers how many clients it wrote to ([`Message::BroadcastClientCount`]),
//! then forwards each client's ack ([`Message::BroadcastAck`]). A broadcast
//! sent over the direct links is answered back over the same link (a
//! socketpair: each end writes to the other), one sent through the primary
//! through it. A worker that leaves before it has answered everything (its
//! link ends, or the primary reports it gone) ends the wait of the broadcasts
//! it was asked to answer: the emitter gets the acks that came, as an error.

use std::{
    collections::HashMap,
    sync::{atomic::Ordering, Arc, MutexGuard, Weak},
    time::Duration,
};

use rsio_ipc::{EventPayload, IpcSender, Message, RequestId, WorkerIndex};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::{hints::LaneSet, ClusterLink};
use crate::{
    adapter::{BroadcastOptions, EncodedPacket, RemoteAck},
    parser::Args,
    server::{Namespace, Socket},
};

/// A broadcast of another worker whose client acks this worker forwards: the
/// emitter and its request id.
pub(super) type ForwardKey = (WorkerIndex, RequestId);

/// One forward in progress, as the link knows it.
pub(super) struct Forward {
    /// Unique on this link: a restarted emitter starts its request ids again.
    id: u64,
    /// Dropped to end the forward early (its emitter left the cluster).
    _cancel: oneshot::Sender<()>,
    /// The sender in the sockets' ack maps: its strong count is how many still wait.
    waiters: mpsc::WeakUnboundedSender<Args>,
}

/// What one lane still owes an acked broadcast written to its direct link.
#[derive(Debug, Clone, Copy)]
struct Owed {
    lane: usize,
    /// `None`: its client count; then that many acks.
    acks: Option<u64>,
    /// Known to be written to (see [`ClusterLink::written`]): until then, the
    /// lane may be dropped as never written.
    written: bool,
    /// Its link ended (its worker the one given) before it was known to be
    /// written to: the emitter stops waiting only if it was.
    gone: Option<WorkerIndex>,
}

impl Owed {
    fn owes(&self) -> bool {
        self.acks != Some(0)
    }
}

/// One of this worker's acked broadcasts waiting for answers.
pub(super) struct PendingAck {
    /// The emitter's end (its `RemoteAcks`).
    tx: mpsc::UnboundedSender<RemoteAck>,
    /// Over the direct links: what each lane it was written to still owes.
    /// `None` through the primary, which asks every worker or answers for it.
    lanes: Option<Vec<Owed>>,
}

impl PendingAck {
    /// A broadcast sent through the primary.
    pub(super) fn relayed(tx: mpsc::UnboundedSender<RemoteAck>) -> PendingAck {
        PendingAck { tx, lanes: None }
    }

    /// A broadcast about to be written to the direct links of `lanes`.
    pub(super) fn direct(tx: mpsc::UnboundedSender<RemoteAck>, lanes: &LaneSet) -> PendingAck {
        let lanes = lanes.iter().map(|lane| Owed {
            lane,
            acks: None,
            written: false,
            gone: None,
        });
        PendingAck {
            tx,
            lanes: Some(lanes.collect()),
        }
    }

    /// The processes of `lanes` (of worker `peer`) are gone: whether the
    /// emitter stops waiting now, because one of them was written to and still
    /// owed answers. One not yet known to be written to is marked, for
    /// [`ClusterLink::written`] to tell.
    fn lanes_gone(&mut self, lanes: &[usize], peer: WorkerIndex) -> bool {
        let mut stop = false;
        for owed in self.lanes.iter_mut().flatten() {
            if !lanes.contains(&owed.lane) || !owed.owes() {
                continue;
            }
            if owed.written {
                stop = true;
            } else {
                owed.gone = Some(peer);
            }
        }
        stop
    }
}

/// Where a receiver's answers to an acked broadcast go.
#[derive(Clone)]
pub(super) enum Reply {
    /// Through the primary, which routes them to the emitter.
    Primary,
    /// Back over the direct link the broadcast came on.
    Link(IpcSender),
}

impl ClusterLink {
    /// This worker's acked broadcasts waiting for answers, by request.
    pub(super) fn acks(&self) -> MutexGuard<'_, HashMap<RequestId, PendingAck>> {
        self.broadcast_acks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps, of the lanes `request` was about to be written to, those it was
    /// written to: only they answer.
    /// A lane whose link ended in between stops the wait only if it was
    /// written to.
    pub(super) fn written(&self, request: RequestId, written: &LaneSet) {
        let mut gone = None;
        if let Some(pending) = self.acks().get_mut(&request) {
            for owed in pending.lanes.iter_mut().flatten() {
                owed.written = written.contains(owed.lane);
                if owed.written && owed.owes() {
                    gone = gone.or(owed.gone.map(|peer| (pending.tx.clone(), peer)));
                }
            }
            if let Some(lanes) = pending.lanes.as_mut() {
                lanes.retain(|o| o.written);
            }
        }
        if let Some((tx, peer)) = gone {
            let _ = tx.send(RemoteAck::ServerGone(peer));
        }
    }

    /// Sends an answer by `reply`; `false` once it cannot go any more (its
    /// link is closed, or does not take more).
    fn answer(&self, reply: &Reply, message: Message) -> bool {
        match reply {
            Reply::Primary => {
                self.send(message);
                true
            }
            Reply::Link(sender) => match sender.send(message) {
                Ok(()) => true,
                Err(err) => {
                    debug!(target: "socket.io:adapter", "answer on a direct link: {err}");
                    false
                }
            },
        }
    }

    /// Hands an answer that came through the primary to the emitter of `request`,
    /// if it still waits.
    pub(super) fn forward_ack(&self, request: RequestId, ack: RemoteAck) {
        let tx = self.acks().get(&request).map(|p| p.tx.clone());
        if let Some(tx) = tx {
            let _ = tx.send(ack);
        }
    }

    /// An answer of the process of `lane` (of worker `peer`) over its direct
    /// link, to an acked broadcast of this worker: handed to its emitter if it
    /// was written to that lane and still waits (a late one is dropped).
    /// `false`, for the link to be closed, when it is not an answer, or says it
    /// is from another worker or for another.
    pub(super) fn direct_answer(&self, lane: usize, peer: WorkerIndex, message: Message) -> bool {
        let (from, to, request, ack) = match message {
            Message::BroadcastClientCount {
                from,
                to,
                request,
                count,
            } => (from, to, request, RemoteAck::ClientCount(from, count)),
            Message::BroadcastAck {
                from,
                to,
                request,
                payload,
            } => (
                from,
                to,
                request,
                RemoteAck::Ack(Args::from_raw(payload.json, payload.attachments)),
            ),
            _ => return false,
        };
        if from != peer || to != self.index {
            return false;
        }
        let tx = {
            let mut acks = self.acks();
            let owed = acks
                .get_mut(&request)
                .and_then(|p| Some((p.tx.clone(), p.lanes.as_mut()?)))
                .and_then(|(tx, lanes)| Some((tx, lanes.iter_mut().find(|o| o.lane == lane)?)));
            owed.map(|(tx, owed)| {
                owed.acks = match (&ack, owed.acks) {
                    (RemoteAck::ClientCount(_, count), _) => Some(*count),
                    (_, acks) => acks.map(|n| n.saturating_sub(1)),
                };
                tx
            })
        };
        if let Some(tx) = tx {
            let _ = tx.send(ack);
        }
        true
    }

    /// The direct link to the process of `lane` (of worker `peer`) ended: the
    /// broadcasts it still owes answers stop waiting.
    pub(super) fn acks_link_gone(&self, lane: usize, peer: WorkerIndex) {
        let senders: Vec<_> = self
            .acks()
            .values_mut()
            .filter_map(|p| p.lanes_gone(&[lane], peer).then(|| p.tx.clone()))
            .collect();
        for tx in senders {
            let _ = tx.send(RemoteAck::ServerGone(peer));
        }
    }

    /// Worker `worker` left the cluster: the broadcasts it was asked to answer
    /// stop waiting (through the primary: every one), and the forwards of its
    /// broadcasts' acks end.
    pub(super) fn acks_worker_gone(&self, worker: WorkerIndex) {
        let lanes = self.hints.get().map_or([worker as usize; 2], |h| {
            super::hints::lanes_of_worker(worker as usize, h.table().lanes())
        });
        let senders: Vec<_> = self
            .acks()
            .values_mut()
            .filter_map(|p| {
                (p.lanes.is_none() || p.lanes_gone(&lanes, worker)).then(|| p.tx.clone())
            })
            .collect();
        for tx in senders {
            let _ = tx.send(RemoteAck::ServerGone(worker));
        }
        // Nobody is left to forward to: dropping a forward's entry ends it.
        let gone: Vec<Forward> = {
            let mut forwards = self.forwards();
            let keys: Vec<ForwardKey> = forwards
                .keys()
                .filter(|(from, _)| *from == worker)
                .copied()
                .collect();
            keys.iter().filter_map(|k| forwards.remove(k)).collect()
        };
        drop(gone);
    }

    fn forwards(&self) -> MutexGuard<'_, HashMap<ForwardKey, Forward>> {
        self.forwards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Broadcasts of other workers whose client acks this worker still forwards,
    /// and the sockets that still wait for an ack of one of them.
    pub fn pending_remote_acks(&self) -> (usize, usize) {
        let forwards = self.forwards();
        let sockets = forwards.values().map(|f| f.waiters.strong_count()).sum();
        (forwards.len(), sockets)
    }

    /// The senders in the sockets' ack maps of the forwards now pending.
    #[cfg(test)]
    pub(super) fn remote_ack_waiters(&self) -> Vec<mpsc::WeakUnboundedSender<Args>> {
        self.forwards()
            .values()
            .map(|f| f.waiters.clone())
            .collect()
    }

    /// Delivers an acked broadcast of worker `from` (its `request` and client
    /// `ack_id`) to the sockets of `ns` that `opts` selects, answers its count
    /// by `reply`, and forwards each client's ack the same way.
    pub(super) fn deliver_acked(
        self: &Arc<Self>,
        ns: &Namespace,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        (from, request, ack_id): (WorkerIndex, RequestId, u64),
        reply: Reply,
    ) {
        // Our clients answer with the emitter's ack id; forward each answer to it.
        let (tx, rx) = mpsc::unbounded_channel();
        let waiters = tx.downgrade();
        let targets = ns.select(opts);
        let count = ns.deliver_with_ack(packet, &targets, opts.flags, ack_id, tx);
        let counted = Message::BroadcastClientCount {
            to: from,
            from: self.index,
            request,
            count: count as u64,
        };
        if !self.answer(&reply, counted) || count == 0 {
            return;
        }
        // Weak: a socket that disconnects is not kept alive by the forward.
        let sockets: Vec<_> = targets.iter().map(|s| Arc::downgrade(&s.0)).collect();
        let forget = move || {
            for socket in sockets.iter().filter_map(Weak::upgrade) {
                Socket(socket).forget_ack(ack_id);
            }
        };
        let id = self.next_forward.fetch_add(1, Ordering::Relaxed);
        let (cancel, cancelled) = oneshot::channel();
        let key = (from, request);
        let replaced = self.forwards().insert(
            key,
            Forward {
                id,
                _cancel: cancel,
                waiters: waiters.clone(),
            },
        );
        drop(replaced);
        tokio::spawn(forward_acks(
            Arc::downgrade(self),
            ForwardTask {
                key,
                id,
                window: self.remote_ack_window,
                count,
                rx,
                waiters,
                forget,
                cancelled,
                reply,
            },
        ));
    }
}

/// What [`forward_acks`] needs of one broadcast.
struct ForwardTask<F> {
    key: ForwardKey,
    id: u64,
    window: Duration,
    count: usize,
    rx: mpsc::UnboundedReceiver<Args>,
    waiters: mpsc::WeakUnboundedSender<Args>,
    /// Removes the broadcast's waiter from every socket that is still there.
    forget: F,
    cancelled: oneshot::Receiver<()>,
    reply: Reply,
}

/// Forwards the client acks of a broadcast to its emitter until all came, the
/// window ends, the emitter leaves (or its link closes) or every waiting
/// socket disconnected; then removes the waiters it left in the sockets' ack
/// maps, and its entry.
async fn forward_acks<F: FnOnce()>(link: Weak<ClusterLink>, task: ForwardTask<F>) {
    let ForwardTask {
        key: (from, request),
        id,
        window,
        count,
        mut rx,
        waiters,
        forget,
        cancelled,
        reply,
    } = task;
    let forward = async {
        // `None`: every socket that waited has disconnected (its ack map is gone).
        for _ in 0..count {
            let Some(args) = rx.recv().await else { break };
            let Some(link) = link.upgrade() else { break };
            let (json, attachments) = args.into_parts();
            let ack = Message::BroadcastAck {
                to: from,
                from: link.index,
                request,
                payload: EventPayload { json, attachments },
            };
            if !link.answer(&reply, ack) {
                break;
            }
        }
    };
    tokio::select! {
        _ = forward => {}
        _ = tokio::time::sleep(window) => {}
        _ = cancelled => {}
    }
    drop(rx);
    // Each waiter left holds the sender until its socket closes: take them out.
    if waiters.strong_count() > 0 {
        forget();
    }
    if let Some(link) = link.upgrade() {
        let mut forwards = link.forwards();
        if forwards.get(&(from, request)).is_some_and(|f| f.id == id) {
            forwards.remove(&(from, request));
        }
    }
}
