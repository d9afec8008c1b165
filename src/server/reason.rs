//! Why a socket left its namespace, with Node's reason strings.

use crate::engine::CloseReason;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
/// Why a socket left its namespace (Node's `reason` of `disconnect`).
pub enum DisconnectReason {
    /// The server called `socket.disconnect()`.
    ServerNamespaceDisconnect,
    /// The client called `socket.disconnect()`.
    ClientNamespaceDisconnect,
    /// The server is shutting down (recoverable).
    ServerShuttingDown,
    /// The client answered no ping in time.
    PingTimeout,
    /// The connection was closed (recoverable).
    TransportClose,
    /// The connection failed (recoverable).
    TransportError,
    /// The client sent what is not Socket.IO.
    ParseError,
    /// The server closed the Engine.IO connection.
    ForcedClose,
    /// The connection was closed because the client broke the protocol, or sent no CONNECT in time.
    ForcedServerClose,
    /// The client read too slowly and its send queue passed its bound (not in Node).
    SendQueueFull,
    /// Code of the application (a handler, middleware or listener) panicked
    /// while it ran for this socket (not in Node).
    HandlerPanic,
}

impl DisconnectReason {
    /// Node's reason string.
    pub fn as_str(&self) -> &'static str {
        match self {
            DisconnectReason::ServerNamespaceDisconnect => "server namespace disconnect",
            DisconnectReason::ClientNamespaceDisconnect => "client namespace disconnect",
            DisconnectReason::ServerShuttingDown => "server shutting down",
            DisconnectReason::PingTimeout => "ping timeout",
            DisconnectReason::TransportClose => "transport close",
            DisconnectReason::TransportError => "transport error",
            DisconnectReason::ParseError => "parse error",
            DisconnectReason::ForcedClose => "forced close",
            DisconnectReason::ForcedServerClose => "forced server close",
            DisconnectReason::SendQueueFull => "send queue full",
            DisconnectReason::HandlerPanic => "handler panic",
        }
    }

    /// Whether a session is kept for connection state recovery after this reason.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            DisconnectReason::TransportError
                | DisconnectReason::TransportClose
                | DisconnectReason::ForcedClose
                | DisconnectReason::PingTimeout
                | DisconnectReason::ServerShuttingDown
                | DisconnectReason::ForcedServerClose
                | DisconnectReason::SendQueueFull
        )
    }
}

impl From<CloseReason> for DisconnectReason {
    fn from(reason: CloseReason) -> Self {
        match reason {
            CloseReason::TransportClose => DisconnectReason::TransportClose,
            CloseReason::TransportError => DisconnectReason::TransportError,
            CloseReason::PingTimeout => DisconnectReason::PingTimeout,
            CloseReason::ParseError => DisconnectReason::ParseError,
            CloseReason::ForcedClose => DisconnectReason::ForcedClose,
            CloseReason::SendQueueFull => DisconnectReason::SendQueueFull,
        }
    }
}

impl std::fmt::Display for DisconnectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
