//! `BroadcastOperator`: to/in/except chains and the operations on the sockets
//! they select, here and (through the adapter) on every other server.

use std::time::Duration;

use tokio::sync::mpsc;

use super::{
    ack::{BroadcastAckError, EmitError, IntoArgs},
    handshake::Handshake,
    namespace::Namespace,
    rooms::IntoRooms,
    socket::{check_event, encode, Socket},
};
use crate::{
    adapter::{AdapterError, BroadcastOptions, RemoteAck, SocketId},
    parser::{Args, Packet},
};

/// Default wait for `fetch_sockets` answers from other servers (Node's 5 s).
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// A selection of sockets and flags, built by chaining; ends with an operation.
///
/// ```no_run
/// # use rsio::server::Server;
/// # let io = Server::new(Default::default());
/// io.to("room1").to("room2").except("muted").emit("news", &("hello", 1)).unwrap();
/// io.local().volatile().emit("tick", &(1,)).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct BroadcastOperator {
    ns: Namespace,
    opts: BroadcastOptions,
    timeout: Option<Duration>,
}

impl BroadcastOperator {
    pub(crate) fn new(ns: Namespace) -> BroadcastOperator {
        BroadcastOperator {
            ns,
            opts: BroadcastOptions::default(),
            timeout: None,
        }
    }

    /// Targets the members of these rooms (cumulative: a union).
    pub fn to(mut self, rooms: impl IntoRooms) -> Self {
        for room in rooms.into_rooms() {
            if !self.opts.rooms.contains(&room) {
                self.opts.rooms.push(room);
            }
        }
        self
    }

    /// Same as [`BroadcastOperator::to`] (Node's `in`).
    pub fn within(self, rooms: impl IntoRooms) -> Self {
        self.to(rooms)
    }

    /// Leaves out the members of these rooms.
    pub fn except(mut self, rooms: impl IntoRooms) -> Self {
        for room in rooms.into_rooms() {
            if !self.opts.except.contains(&room) {
                self.opts.except.push(room);
            }
        }
        self
    }

    /// This server only.
    pub fn local(mut self) -> Self {
        self.opts.flags.local = true;
        self
    }

    /// Dropped for clients that cannot take the packet right now.
    pub fn volatile(mut self) -> Self {
        self.opts.flags.volatile = true;
        self
    }

    /// With `false`, the packet is never compressed: no permessage-deflate for
    /// its frames, and no `httpCompression` for a polling response that holds
    /// only such packets (Node's `compress`). The flag travels with the
    /// broadcast to the other workers and hosts.
    pub fn compress(mut self, compress: bool) -> Self {
        self.opts.flags.compress = compress;
        self
    }

    /// Bounds [`BroadcastOperator::emit_with_ack`] and `fetch_sockets`.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Which sockets it reaches.
    pub fn options(&self) -> &BroadcastOptions {
        &self.opts
    }

    /// Sends an event to every selected socket; the packet is encoded once.
    pub fn emit(self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        check_event(event)?;
        crate::metrics::add(crate::metrics::counter::BROADCASTS_SENT, 1);
        let mut args = args.into_args()?;
        let adapter = self.ns.adapter();
        if adapter.sequenced() && !self.opts.flags.volatile && !self.opts.flags.local {
            // Recoverable in a cluster: the primary numbers it and delivers it
            // everywhere, this server included, in offset order.
            let packet = Packet::event(self.ns.name(), event, args, None);
            adapter.broadcast_sequenced(&encode(&packet, self.ns.parser()), &self.opts);
            return Ok(());
        }
        let offset = if self.opts.flags.volatile {
            None
        } else {
            adapter.next_offset()
        };
        if let Some(offset) = &offset {
            args.push(offset)?;
        }
        let packet = Packet::event(self.ns.name(), event, args, None);
        let encoded = encode(&packet, self.ns.parser());
        if let Some(offset) = &offset {
            adapter.store_packet(offset, &self.opts, &encoded);
        }
        if !self.opts.flags.local {
            adapter.broadcast_remote(&encoded, &self.opts);
        }
        self.ns
            .deliver(&encoded, &self.opts, packet.args().map(|a| (event, a)));
        Ok(())
    }

    /// Sends an event and collects one acknowledgement per selected socket, on
    /// every server. Without a [`timeout`](Self::timeout) it waits 5 s; on
    /// timeout the error carries the responses that did arrive.
    pub async fn emit_with_ack(
        self,
        event: &str,
        args: impl IntoArgs,
    ) -> Result<Vec<Args>, BroadcastEmitError> {
        check_event(event)?;
        let args = args.into_args().map_err(EmitError::from)?;
        let id = self.ns.next_ack_id();
        let packet = Packet::event(self.ns.name(), event, args, Some(id));
        let encoded = encode(&packet, self.ns.parser());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut remote = if self.opts.flags.local {
            None
        } else {
            self.ns
                .adapter()
                .broadcast_with_ack_remote(&encoded, &self.opts, id)
        };
        let targets = self.ns.select(&self.opts);
        // From here on, however this ends (answers, timeout, or this future
        // dropped), the waiters leave the targets' ack maps.
        let _waiters = ForgetAcks {
            targets: &targets,
            id,
        };
        if let Some(args) = packet.args() {
            for socket in &targets {
                socket.notify_outgoing(event, args);
            }
        }
        let mut expected = self
            .ns
            .deliver_with_ack(&encoded, &targets, self.opts.flags, id, tx);
        let mut servers_pending = remote.as_ref().map_or(0, |r| r.servers);
        let timeout = self.timeout.unwrap_or(FETCH_TIMEOUT);
        let mut responses = Vec::with_capacity(expected);
        let collect = async {
            let mut local_open = true;
            while servers_pending > 0 || responses.len() < expected {
                let remote_event = async {
                    match remote.as_mut() {
                        Some(r) => r.events.recv().await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    local = rx.recv(), if local_open => match local {
                        Some(args) => responses.push(args),
                        None => local_open = false,
                    },
                    ev = remote_event => match ev {
                        Some(RemoteAck::ClientCount(_, n)) => {
                            expected += n as usize;
                            servers_pending = servers_pending.saturating_sub(1);
                        }
                        Some(RemoteAck::Ack(args)) => responses.push(args),
                        // A server that left before reporting can no longer answer.
                        Some(RemoteAck::ServerGone(_)) | None => return false,
                    },
                }
                if !local_open && remote.is_none() && responses.len() < expected {
                    // Every local waiter is gone (sockets disconnected).
                    return false;
                }
            }
            true
        };
        let complete = match tokio::time::timeout(timeout, collect).await {
            Ok(complete) => complete,
            Err(_) => {
                crate::metrics::add(crate::metrics::counter::BROADCAST_ACK_TIMEOUTS, 1);
                false
            }
        };
        drop(remote);
        if complete {
            Ok(responses)
        } else {
            Err(BroadcastEmitError::Ack(BroadcastAckError { responses }))
        }
    }

    /// The selected sockets of every server.
    pub async fn fetch_sockets(self) -> Result<Vec<FetchedSocket>, AdapterError> {
        let mut out: Vec<FetchedSocket> = self
            .ns
            .select(&self.opts)
            .into_iter()
            .map(|s| FetchedSocket {
                id: s.id(),
                handshake: Some(s.handshake().clone()),
                rooms: s.rooms(),
                data: s.data_value(),
                ns: self.ns.clone(),
                local: Some(s),
            })
            .collect();
        if !self.opts.flags.local {
            let remote = self
                .ns
                .adapter()
                .fetch_sockets_remote(&self.opts, self.timeout.unwrap_or(FETCH_TIMEOUT))
                .await?;
            out.extend(remote.into_iter().map(|info| FetchedSocket {
                id: info.id,
                handshake: info.handshake,
                rooms: info.rooms,
                data: info.data,
                ns: self.ns.clone(),
                local: None,
            }));
        }
        Ok(out)
    }

    /// Makes the selected sockets of every server join these rooms.
    pub fn sockets_join(self, rooms: impl IntoRooms) {
        let rooms = rooms.into_rooms();
        if !self.opts.flags.local {
            self.ns.adapter().sockets_join_remote(&self.opts, &rooms);
        }
        self.ns.local_sockets_join(&self.opts, &rooms);
    }

    /// Makes the selected sockets of every server leave these rooms.
    pub fn sockets_leave(self, rooms: impl IntoRooms) {
        let rooms = rooms.into_rooms();
        if !self.opts.flags.local {
            self.ns.adapter().sockets_leave_remote(&self.opts, &rooms);
        }
        self.ns.local_sockets_leave(&self.opts, &rooms);
    }

    /// Disconnects the selected sockets of every server.
    pub fn disconnect_sockets(self, close: bool) {
        if !self.opts.flags.local {
            self.ns
                .adapter()
                .disconnect_sockets_remote(&self.opts, close);
        }
        for socket in self.ns.select(&self.opts) {
            socket.disconnect(close);
        }
    }
}

/// Takes a broadcast's ack waiters out of its targets when dropped.
struct ForgetAcks<'a> {
    targets: &'a [Socket],
    id: u64,
}

impl Drop for ForgetAcks<'_> {
    fn drop(&mut self) {
        for socket in self.targets {
            socket.forget_ack(self.id);
        }
    }
}

/// Why a broadcast with acknowledgements failed.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastEmitError {
    #[error(transparent)]
    /// The event could not be sent.
    Emit(#[from] EmitError),
    #[error(transparent)]
    /// Not every client acknowledged in time.
    Ack(BroadcastAckError),
}

/// A socket found by `fetch_sockets`, on this server or another.
#[derive(Debug, Clone)]
pub struct FetchedSocket {
    /// The socket's id.
    pub id: SocketId,
    /// Its handshake: for a socket on another server, as that server
    /// described it (see [`Handshake::from_json`]: the address without its
    /// port, the issue time in milliseconds). `None` only when a remote
    /// answer carried no readable handshake.
    pub handshake: Option<Handshake>,
    /// Its rooms (its own id room included).
    pub rooms: Vec<String>,
    /// Its `socket.data`.
    pub data: serde_json::Value,
    ns: Namespace,
    local: Option<Socket>,
}

impl FetchedSocket {
    /// The live socket, when it is on this server.
    pub fn local(&self) -> Option<&Socket> {
        self.local.as_ref()
    }

    fn target(&self) -> BroadcastOperator {
        BroadcastOperator::new(self.ns.clone()).to(self.id)
    }

    /// Sends an event to this socket, wherever it is.
    pub fn emit(&self, event: &str, args: impl IntoArgs) -> Result<(), EmitError> {
        match &self.local {
            Some(s) => s.emit(event, args),
            None => self.target().emit(event, args),
        }
    }

    /// Makes it join these rooms, wherever it is.
    pub fn join(&self, rooms: impl IntoRooms) {
        match &self.local {
            Some(s) => s.join(rooms),
            None => self.target().sockets_join(rooms),
        }
    }

    /// Makes it leave `room`, wherever it is.
    pub fn leave(&self, room: &str) {
        match &self.local {
            Some(s) => s.leave(room),
            None => self.target().sockets_leave(room),
        }
    }

    /// Disconnects it, wherever it is.
    pub fn disconnect(&self, close: bool) {
        match &self.local {
            Some(s) => s.disconnect(close),
            None => self.target().disconnect_sockets(close),
        }
    }
}
