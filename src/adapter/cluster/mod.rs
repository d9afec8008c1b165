//! The cluster adapter: a [`LocalAdapter`] for this worker's rooms, and the
//! [`ClusterLink`] that carries every cross-worker operation to the primary,
//! which relays it to the other workers.
//!
//! A broadcast is encoded once, on the emitting worker: the relayed message
//! carries the encoded frames and the room filters, so the receiving workers only
//! look up rooms and write bytes. One that needs no sequencing (no recovery, no
//! room forced through the primary) goes straight to the worker processes with
//! recipients over the [`direct`] links, not through the primary; one with acks
//! too, answered back over the same links (see [`acks`]).

mod acks;
pub(crate) mod direct;
pub(crate) mod hints;
mod link;
mod mapping;
mod sticky;
#[cfg(test)]
mod tests;

use std::{
    sync::{atomic::Ordering, Arc, Weak},
    time::Duration,
};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use rsio_ipc::{
    Broadcast, EventPayload, Frame as IpcFrame, Message, RequestId, Session, Target, WorkerIndex,
};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{
    Adapter, AdapterError, BroadcastFlags, BroadcastOptions, EncodedPacket, LocalAdapter,
    PartialResponses, PersistedSession, RemoteAcks, Restored, SocketId, SocketInfo,
};
use crate::{
    engine::{Frame, Sid},
    parser::Args,
    server::Handshake,
};

use acks::PendingAck;
use direct::Route;
use link::RESTORE_TIMEOUT;
pub use link::{AlreadyAttached, ClusterLink};

pub(super) fn target(opts: &BroadcastOptions) -> Target {
    Target {
        rooms: opts.rooms.clone(),
        except: opts.except.clone(),
        volatile: opts.flags.volatile,
        uncompressed: !opts.flags.compress,
    }
}

pub(super) fn options(target: &Target) -> BroadcastOptions {
    BroadcastOptions {
        rooms: target.rooms.clone(),
        except: target.except.clone(),
        flags: BroadcastFlags {
            local: true,
            volatile: target.volatile,
            compress: !target.uncompressed,
        },
    }
}

pub(super) fn ipc_session(nsp: &str, s: &PersistedSession) -> Session {
    Session {
        nsp: nsp.to_string(),
        pid: s.pid.to_string(),
        id: s.id.to_string(),
        rooms: s.rooms.clone(),
        data: s.data.to_string().into_bytes(),
    }
}

pub(super) fn ipc_frames(packet: &EncodedPacket) -> Vec<IpcFrame> {
    packet
        .0
        .iter()
        .map(|f| match f {
            Frame::Text(t) => IpcFrame::Text(Bytes::from(t.clone())),
            Frame::Binary(b) => IpcFrame::Binary(b.clone()),
        })
        .collect()
}

pub(super) fn encoded(frames: Vec<IpcFrame>) -> Option<EncodedPacket> {
    let frames: Option<Vec<Frame>> = frames
        .into_iter()
        .map(|f| match f {
            IpcFrame::Text(t) => Utf8Bytes::try_from(t).ok().map(Frame::Text),
            IpcFrame::Binary(b) => Some(Frame::Binary(b)),
        })
        .collect();
    Some(EncodedPacket(frames?.into()))
}

impl ClusterLink {
    /// Sends a broadcast of `nsp` to every other worker through the primary,
    /// without ack or offset. With `--redis` (the worker's adapter is then
    /// Redis'), for a broadcast Redis never got: the workers of one host keep
    /// sharing their broadcasts while Redis is unreachable.
    pub(crate) fn relay_broadcast(
        &self,
        nsp: &str,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
    ) {
        self.send(Message::Broadcast(Broadcast {
            nsp: nsp.to_string(),
            target: target(opts),
            ack: None,
            offset: None,
            frames: ipc_frames(packet),
        }));
    }
}

/// The adapter of one namespace on one worker of a cluster.
pub struct ClusterAdapter {
    pub(super) nsp: String,
    pub(super) local: LocalAdapter,
    pub(super) link: Weak<ClusterLink>,
}

impl ClusterAdapter {
    fn link(&self) -> Option<Arc<ClusterLink>> {
        self.link.upgrade()
    }
}

impl Adapter for ClusterAdapter {
    fn add_all(&self, id: SocketId, rooms: &[String]) {
        self.local.add_all(id, rooms)
    }

    fn del(&self, id: SocketId, room: &str) {
        self.local.del(id, room)
    }

    fn del_all(&self, id: SocketId) {
        self.local.del_all(id)
    }

    fn socket_rooms(&self, id: SocketId) -> Vec<String> {
        self.local.socket_rooms(id)
    }

    fn rooms(&self) -> Vec<String> {
        self.local.rooms()
    }

    fn for_each_local(&self, opts: &BroadcastOptions, f: &mut dyn FnMut(SocketId)) {
        self.local.for_each_local(opts, f)
    }

    fn on_room_event(&self, listener: super::RoomListener) {
        self.local.on_room_event(listener)
    }

    fn server_count(&self) -> usize {
        self.link().map_or(1, |l| 1 + l.peers().len())
    }

    fn sequenced(&self) -> bool {
        self.link().is_some_and(|l| l.recovery.get().is_some())
    }

    fn broadcast_sequenced(&self, packet: &EncodedPacket, opts: &BroadcastOptions) {
        if let Some(link) = self.link() {
            link.send(Message::Broadcast(Broadcast {
                nsp: self.nsp.clone(),
                target: target(opts),
                ack: None,
                // "Number this one": the primary assigns the offset.
                offset: Some(0),
                frames: ipc_frames(packet),
            }));
        }
    }

    fn session_update(&self, session: &PersistedSession) {
        if let Some(link) = self.link().filter(|l| l.recovery.get().is_some()) {
            link.send(Message::SessionUpdate(ipc_session(&self.nsp, session)));
        }
    }

    fn persist_session(&self, session: PersistedSession) {
        if let Some(link) = self.link().filter(|l| l.recovery.get().is_some()) {
            let pid = session.pid.to_string();
            link.send(Message::SessionUpdate(ipc_session(&self.nsp, &session)));
            link.send(Message::SessionClosed {
                nsp: self.nsp.clone(),
                pid,
                recoverable: true,
            });
        }
    }

    fn forget_session(&self, pid: Sid) {
        if let Some(link) = self.link().filter(|l| l.recovery.get().is_some()) {
            link.send(Message::SessionClosed {
                nsp: self.nsp.clone(),
                pid: pid.to_string(),
                recoverable: false,
            });
        }
    }

    fn restore_session(&self, pid: &str, offset: &str) -> BoxFuture<'static, Option<Restored>> {
        let Some(link) = self.link().filter(|l| l.recovery.get().is_some()) else {
            return Box::pin(std::future::ready(None));
        };
        let request = link.next_broadcast.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        link.restores().insert(request, tx);
        link.send(Message::RestoreSession {
            from: link.index,
            request,
            nsp: self.nsp.clone(),
            pid: pid.to_string(),
            offset: offset.to_string(),
        });
        let weak = Arc::downgrade(&link);
        Box::pin(async move {
            let answer = tokio::time::timeout(RESTORE_TIMEOUT, rx).await;
            if let Some(link) = weak.upgrade() {
                link.restores().remove(&request);
            }
            let (session, missed, horizon) = answer.ok()?.ok()?;
            let session = session?;
            let missed = missed.into_iter().filter_map(encoded).collect();
            Some(Restored {
                session: PersistedSession {
                    id: Sid::parse(&session.id)?,
                    pid: Sid::parse(&session.pid)?,
                    rooms: session.rooms,
                    data: serde_json::from_slice(&session.data).unwrap_or_default(),
                },
                missed,
                horizon: Some(horizon),
                // The primary counts this worker in the session's rooms itself.
                hold: None,
            })
        })
    }

    fn confirm_rooms(&self, rooms: &[String]) {
        self.local.report_presence(rooms);
    }

    fn missed_after(&self, horizon: u64, rooms: &[String]) -> Vec<EncodedPacket> {
        let Some(link) = self.link() else {
            return Vec::new();
        };
        let recent = link.recent();
        recent
            .iter()
            .filter(|r| {
                r.offset > horizon
                    && r.nsp == self.nsp
                    && super::reaches(&r.rooms, &r.except, rooms)
            })
            .map(|r| r.packet.clone())
            .collect()
    }

    fn ack_id_base(&self) -> u64 {
        // Ack ids of a broadcast travel to other workers: keep each worker's range
        // apart (and below 2^53, so JavaScript clients echo them exactly).
        self.link().map_or(0, |l| u64::from(l.index) << 40)
    }

    fn broadcast_remote(&self, packet: &EncodedPacket, opts: &BroadcastOptions) {
        // Alone in the cluster (one worker, or the others restarting and so
        // without clients): nobody to relay to.
        if let Some(link) = self.link().filter(|l| !l.peers().is_empty()) {
            let route = link.route(&self.nsp, &opts.rooms);
            if matches!(route, Route::Here) {
                return;
            }
            let message = Message::Broadcast(Broadcast {
                nsp: self.nsp.clone(),
                target: target(opts),
                ack: None,
                offset: None,
                frames: ipc_frames(packet),
            });
            let sent = match &route {
                Route::Direct(lanes) => link.send_direct(lanes, &message).is_some(),
                _ => false,
            };
            if !sent {
                link.send(message);
            }
        }
    }

    fn broadcast_with_ack_remote(
        &self,
        packet: &EncodedPacket,
        opts: &BroadcastOptions,
        ack_id: u64,
    ) -> Option<RemoteAcks> {
        let link = self.link()?;
        if link.peers().is_empty() {
            return None;
        }
        // No other worker has a recipient: every count it would answer is 0.
        let route = link.route(&self.nsp, &opts.rooms);
        if matches!(route, Route::Here) {
            return None;
        }
        let request = link.next_broadcast.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        let message = Message::Broadcast(Broadcast {
            nsp: self.nsp.clone(),
            target: target(opts),
            ack: Some((link.index, request, ack_id)),
            offset: None,
            frames: ipc_frames(packet),
        });
        // Registered before it is sent: an answer may come at once.
        let servers = match &route {
            Route::Direct(lanes) => {
                link.acks().insert(request, PendingAck::direct(tx, lanes));
                // `Direct` comes only with links: never `None` here.
                let written = link.send_direct(lanes, &message).unwrap_or_default();
                link.written(request, &written);
                written.len()
            }
            _ => {
                link.acks().insert(request, PendingAck::relayed(tx));
                link.send(message);
                link.peers().len()
            }
        };
        let guard = RemoteAckGuard {
            link: Arc::downgrade(&link),
            request,
        };
        if servers == 0 {
            // Written to no process (their links stuck or gone): nobody answers.
            return None;
        }
        Some(RemoteAcks {
            servers,
            events: rx,
            cleanup: Box::new(guard),
        })
    }

    fn sockets_join_remote(&self, opts: &BroadcastOptions, rooms: &[String]) {
        if let Some(link) = self.link() {
            // The sockets this adds on other workers are not there yet when this
            // returns, and may be anywhere: until they are, what is sent to these
            // rooms goes through the primary, which counts them in.
            link.send_forcing(Message::SocketsJoin {
                nsp: self.nsp.clone(),
                target: target(opts),
                rooms: rooms.to_vec(),
            });
        }
    }

    fn sockets_leave_remote(&self, opts: &BroadcastOptions, rooms: &[String]) {
        if let Some(link) = self.link() {
            // A direct broadcast to these rooms could overtake this leave, which
            // goes through the primary: until it is done, they go that way too.
            link.send_forcing(Message::SocketsLeave {
                nsp: self.nsp.clone(),
                target: target(opts),
                rooms: rooms.to_vec(),
            });
        }
    }

    fn disconnect_sockets_remote(&self, opts: &BroadcastOptions, close: bool) {
        if let Some(link) = self.link() {
            // As for a leave: the sockets' rooms (every socket, with none) stay
            // behind the disconnect.
            link.send_forcing(Message::DisconnectSockets {
                nsp: self.nsp.clone(),
                target: target(opts),
                close,
            });
        }
    }

    fn fetch_sockets_remote(
        &self,
        opts: &BroadcastOptions,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<SocketInfo>, AdapterError>> {
        let Some(link) = self.link() else {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        };
        let peers: Vec<WorkerIndex> = link.peers().iter().copied().collect();
        if peers.is_empty() {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let (request, collector) = link.fetches.register(peers, timeout);
        link.send(Message::FetchSockets {
            nsp: self.nsp.clone(),
            target: target(opts),
            from: link.index,
            request,
        });
        Box::pin(async move {
            let answers = collector
                .await
                .map_err(|p| AdapterError::Timeout(p.missing as usize))?;
            Ok(answers
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    Some(SocketInfo {
                        id: Sid::parse(&s.id)?,
                        handshake: serde_json::from_slice(&s.handshake)
                            .ok()
                            .and_then(|json| Handshake::from_json(&json)),
                        rooms: s.rooms,
                        data: serde_json::from_slice(&s.data).unwrap_or_default(),
                    })
                })
                .collect())
        })
    }

    fn server_side_emit_remote(
        &self,
        event: &str,
        args: &Args,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<Args>, PartialResponses<Args>>> {
        let Some(link) = self.link() else {
            return Box::pin(std::future::ready(Ok(Vec::new())));
        };
        let peers: Vec<WorkerIndex> = link.peers().iter().copied().collect();
        let payload = EventPayload {
            json: args.json_bytes().clone(),
            attachments: args.attachments().to_vec(),
        };
        if timeout.is_zero() || peers.is_empty() {
            link.send(Message::ServerSideEmit {
                nsp: self.nsp.clone(),
                event: event.to_string(),
                payload,
                from: link.index,
                request: None,
            });
            return Box::pin(std::future::ready(Ok(Vec::new())));
        }
        let (request, collector) = link.server_side.register(peers, timeout);
        link.send(Message::ServerSideEmit {
            nsp: self.nsp.clone(),
            event: event.to_string(),
            payload,
            from: link.index,
            request: Some(request),
        });
        let args = |p: EventPayload| Args::from_raw(p.json, p.attachments);
        Box::pin(async move {
            match collector.await {
                Ok(answers) => Ok(answers.into_iter().map(args).collect()),
                Err(partial) => Err(PartialResponses {
                    missing: partial.missing as usize,
                    responses: partial.responses.into_iter().map(args).collect(),
                }),
            }
        })
    }
}

/// Forgets a broadcast's pending remote acks when the emitter stops waiting.
struct RemoteAckGuard {
    link: Weak<ClusterLink>,
    request: RequestId,
}

impl Drop for RemoteAckGuard {
    fn drop(&mut self) {
        if let Some(link) = self.link.upgrade() {
            link.acks().remove(&self.request);
        }
    }
}
