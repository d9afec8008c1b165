//! Acknowledgements: answering a client's ack, and waiting for clients' acks.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::socket::{check_event, Socket};
use crate::parser::{Args, Packet, ParseError};

/// Why an `emit` could not be done.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("arguments could not be encoded: {0}")]
    /// An argument does not serialize.
    Encode(#[from] ParseError),
    #[error("\"{0}\" is a reserved event name")]
    /// The event name is one Socket.IO reserves (`connect`, `disconnect`, …).
    ReservedEvent(String),
    #[error("the socket is disconnected")]
    /// The socket has left.
    Disconnected,
}

/// Why an acknowledgement did not come.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("operation has timed out")]
    /// No acknowledgement within the timeout.
    Timeout,
    #[error("the socket disconnected before acknowledging")]
    /// The socket left before it acknowledged.
    Disconnected,
}

/// A broadcast with acknowledgements that did not complete: the responses that
/// arrived before the timeout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation has timed out")]
pub struct BroadcastAckError {
    /// The acknowledgements that came.
    pub responses: Vec<Args>,
}

/// What `emit` and `ack.send` take, as Node has it: `()` is no argument, a
/// tuple one argument per element, any other `&T: Serialize` (a `Vec`
/// included) exactly one, and an [`Args`] goes as it is. The whole rule, with
/// examples, is on [`Args`].
pub trait IntoArgs {
    /// The arguments, or why the value does not serialize.
    fn into_args(self) -> Result<Args, ParseError>;
}

impl IntoArgs for Args {
    fn into_args(self) -> Result<Args, ParseError> {
        Ok(self)
    }
}

/// Shares the text and attachments (reference-counted), copying neither.
impl IntoArgs for &Args {
    fn into_args(self) -> Result<Args, ParseError> {
        Ok(self.clone())
    }
}

impl IntoArgs for () {
    fn into_args(self) -> Result<Args, ParseError> {
        Ok(Args::empty())
    }
}

impl<T: serde::Serialize + ?Sized> IntoArgs for &T {
    fn into_args(self) -> Result<Args, ParseError> {
        Args::new(self)
    }
}

/// Why [`Socket::emit_with_ack`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EmitWithAckError {
    #[error(transparent)]
    /// The event could not be sent.
    Emit(#[from] EmitError),
    #[error(transparent)]
    /// No acknowledgement came.
    Ack(AckError),
}

/// A socket whose next acknowledged emit has a deadline.
pub struct SocketTimeout<'a> {
    socket: &'a Socket,
    timeout: Duration,
}

impl<'a> SocketTimeout<'a> {
    pub(crate) fn new(socket: &'a Socket, timeout: Duration) -> SocketTimeout<'a> {
        SocketTimeout { socket, timeout }
    }

    /// Sends an event; fails with [`AckError::Timeout`] if no ack comes in
    /// time, and the waiter is gone then.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        args: impl IntoArgs,
    ) -> Result<Args, EmitWithAckError> {
        let pending = self.socket.emit_ack_packet(event, args)?;
        match tokio::time::timeout(self.timeout, pending.wait()).await {
            Ok(res) => res.map_err(EmitWithAckError::Ack),
            Err(_) => {
                crate::metrics::add(crate::metrics::counter::ACK_TIMEOUTS, 1);
                Err(EmitWithAckError::Ack(AckError::Timeout))
            }
        }
    }
}

/// One socket's waited-for acknowledgement. Dropped before its answer (a
/// timeout, or the caller's future dropped), it takes its waiter out of the
/// socket's ack map, so no path leaves one behind.
pub(crate) struct PendingAck<'a> {
    socket: &'a Socket,
    id: u64,
    rx: oneshot::Receiver<Result<Args, AckError>>,
    /// The channel has ended: whoever ended it took the waiter out already.
    ended: bool,
}

impl<'a> PendingAck<'a> {
    pub(crate) fn new(
        socket: &'a Socket,
        id: u64,
        rx: oneshot::Receiver<Result<Args, AckError>>,
    ) -> PendingAck<'a> {
        PendingAck {
            socket,
            id,
            rx,
            ended: false,
        }
    }

    /// The answer, or [`AckError::Disconnected`] once the socket has left.
    pub(crate) async fn wait(mut self) -> Result<Args, AckError> {
        let res = (&mut self.rx).await;
        self.ended = true;
        res.unwrap_or(Err(AckError::Disconnected))
    }
}

impl Drop for PendingAck<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.socket.forget_ack(self.id);
        }
    }
}

/// Where a waited-for acknowledgement goes.
#[derive(Debug)]
pub(crate) enum AckWaiter {
    One(oneshot::Sender<Result<Args, AckError>>),
    /// One of the responses of a broadcast with acks.
    Many(mpsc::UnboundedSender<Args>),
}

#[derive(Debug)]
enum Target {
    None,
    Client { socket: Socket, id: u64 },
    Channel(oneshot::Sender<Args>),
}

/// Answers the acknowledgement a packet asked for. Sending is a no-op when the
/// packet asked for none; dropping it sends nothing.
#[derive(Debug)]
pub struct AckSender {
    target: Target,
}

impl AckSender {
    /// An ack nobody waits for: sending it does nothing.
    pub fn none() -> AckSender {
        AckSender {
            target: Target::None,
        }
    }

    pub(crate) fn client(socket: Socket, id: Option<u64>) -> AckSender {
        match id {
            Some(id) => AckSender {
                target: Target::Client { socket, id },
            },
            None => AckSender::none(),
        }
    }

    /// An ack answered into a channel (server-side emits from other servers).
    pub(crate) fn channel(tx: oneshot::Sender<Args>) -> AckSender {
        AckSender {
            target: Target::Channel(tx),
        }
    }

    /// Whether the sender of the packet waits for an answer.
    pub fn is_requested(&self) -> bool {
        !matches!(self.target, Target::None)
    }

    /// Sends the acknowledgement with these arguments.
    pub fn send(self, args: impl IntoArgs) -> Result<(), EmitError> {
        let args = args.into_args()?;
        match self.target {
            Target::None => Ok(()),
            Target::Client { socket, id } => {
                let packet = Packet::ack(socket.ns(), id, args);
                if socket.send_packet(&packet) {
                    Ok(())
                } else {
                    Err(EmitError::Disconnected)
                }
            }
            Target::Channel(tx) => tx.send(args).map_err(|_| EmitError::Disconnected),
        }
    }

    /// Acknowledges with one argument `{"error": message}`.
    pub fn send_error(self, message: &str) -> Result<(), EmitError> {
        self.send(&serde_json::json!({ "error": message }))
    }
}

/// The ack map of a socket: its waiters, and the packets that answer them.
impl Socket {
    /// Sends an event and waits for the client's acknowledgement, until the
    /// socket disconnects ([`AckError::Disconnected`]). Use [`Socket::timeout`]
    /// to bound the wait. Dropping the future forgets the waiter.
    pub async fn emit_with_ack(
        &self,
        event: &str,
        args: impl IntoArgs,
    ) -> Result<Args, EmitWithAckError> {
        let pending = self.emit_ack_packet(event, args)?;
        pending.wait().await.map_err(EmitWithAckError::Ack)
    }

    /// Bounds the wait of the next acknowledged emit.
    pub fn timeout(&self, timeout: Duration) -> SocketTimeout<'_> {
        SocketTimeout::new(self, timeout)
    }

    /// Sends an event that asks for an ack; the returned waiter removes itself
    /// from the ack map however the wait ends.
    pub(crate) fn emit_ack_packet(
        &self,
        event: &str,
        args: impl IntoArgs,
    ) -> Result<PendingAck<'_>, EmitError> {
        check_event(event)?;
        let args = args.into_args()?;
        self.notify_outgoing(event, &args);
        let id = self.namespace().next_ack_id();
        let (tx, rx) = oneshot::channel();
        if !self.expect_ack(id, AckWaiter::One(tx)) {
            return Err(EmitError::Disconnected);
        }
        let pending = PendingAck::new(self, id, rx);
        let packet = Packet::event(self.ns(), event, args, Some(id));
        if self.send_packet(&packet) {
            Ok(pending)
        } else {
            Err(EmitError::Disconnected)
        }
    }

    /// Registers a waiter for ack `id`; `false` once the socket has left (a
    /// waiter taken in then would never be answered nor ended).
    pub(crate) fn expect_ack(&self, id: u64, waiter: AckWaiter) -> bool {
        let mut st = self.state();
        if st.acks_closed {
            return false;
        }
        if st.acks.insert(id, waiter).is_none() {
            self.namespace().acks_added(1);
        }
        true
    }

    pub(crate) fn forget_ack(&self, id: u64) {
        self.take_ack(id);
    }

    fn take_ack(&self, id: u64) -> Option<AckWaiter> {
        let waiter = self.state().acks.remove(&id);
        if waiter.is_some() {
            self.namespace().acks_removed(1);
        }
        waiter
    }

    /// Ends every waiter with [`AckError::Disconnected`] and takes no new one.
    pub(crate) fn close_acks(&self) {
        let acks = {
            let mut st = self.state();
            st.acks_closed = true;
            std::mem::take(&mut st.acks)
        };
        self.namespace().acks_removed(acks.len());
        for (_, waiter) in acks {
            if let AckWaiter::One(tx) = waiter {
                let _ = tx.send(Err(AckError::Disconnected));
            }
        }
    }

    /// Acknowledgements this server waits for from this client (its own
    /// `emit_with_ack`s and broadcasts with acks). For tests and metrics.
    pub fn pending_acks(&self) -> usize {
        self.state().acks.len()
    }

    /// An ACK from the client; unknown ids are ignored.
    pub(crate) fn on_ack(&self, id: u64, args: Args) {
        match self.take_ack(id) {
            Some(AckWaiter::One(tx)) => {
                let _ = tx.send(Ok(args));
            }
            Some(AckWaiter::Many(tx)) => {
                let _ = tx.send(args);
            }
            None => debug!(target: "socket.io:socket", id = %self.id(), ack = id, "unknown ack id"),
        }
    }
}
