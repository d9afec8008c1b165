//! Acknowledgements: answering a client's ack, and waiting for clients' acks.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::socket::Socket;
use crate::parser::{Args, Packet, ParseError};

/// Why an `emit` could not be done.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("arguments could not be encoded: {0}")]
    Encode(#[from] ParseError),
    #[error("\"{0}\" is a reserved event name")]
    ReservedEvent(String),
    #[error("the socket is disconnected")]
    Disconnected,
}

/// Why an acknowledgement did not come.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    #[error("operation has timed out")]
    Timeout,
    #[error("the socket disconnected before acknowledging")]
    Disconnected,
}

/// A broadcast with acknowledgements that did not complete: the responses that
/// arrived before the timeout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("operation has timed out")]
pub struct BroadcastAckError {
    pub responses: Vec<Args>,
}

/// Arguments given to `emit`: an [`Args`] as is, or any `&T: Serialize` (a tuple
/// or array is spread into several arguments, anything else is one).
pub trait IntoArgs {
    fn into_args(self) -> Result<Args, ParseError>;
}

impl IntoArgs for Args {
    fn into_args(self) -> Result<Args, ParseError> {
        Ok(self)
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
    Emit(#[from] EmitError),
    #[error(transparent)]
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
            Err(_) => Err(EmitWithAckError::Ack(AckError::Timeout)),
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
    pub fn channel(tx: oneshot::Sender<Args>) -> AckSender {
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
        self.send(&(serde_json::json!({ "error": message }),))
    }
}
