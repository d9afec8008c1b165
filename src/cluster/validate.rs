//! What the primary accepts from a worker: a worker speaks only for itself, names
//! only workers that exist, and sends only the messages a worker sends. Anything else
//! is a broken or hostile worker, which the primary kills and restarts.
//!
//! Sizes are checked before this, by the codec: a frame over the limit, or one that
//! does not decode, never becomes a [`Message`].

use rsio_ipc::{Frame, Message, WorkerIndex, PROTOCOL_VERSION};

/// Why a message from a worker is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Violation {
    /// A message only the primary sends (`drain`, `worker-joined`, …).
    #[error("sent {0}, which only the primary sends")]
    PrimaryOnly(&'static str),
    /// A field that names the sender names another worker.
    #[error("{kind} with {field} = {claimed}, but it is worker {sender}")]
    Impersonation {
        kind: &'static str,
        field: &'static str,
        claimed: WorkerIndex,
        sender: usize,
    },
    /// A response addressed to a worker that does not exist, or to its sender.
    #[error("{kind} addressed to worker {to} (cluster of {workers}, sender {sender})")]
    BadRecipient {
        kind: &'static str,
        to: WorkerIndex,
        workers: usize,
        sender: usize,
    },
    /// A broadcast whose first frame is not the packet's text frame (nor
    /// a lone binary frame: a packet of the msgpack parser).
    #[error("broadcast without its text frame")]
    NoTextFrame,
    /// A second `hello` after the first.
    #[error("a second hello")]
    HelloAgain,
    /// Anything before the `hello`.
    #[error("sent {0} before its hello")]
    BeforeHello(&'static str),
}

/// Checks `message` from worker `sender` of a cluster of `workers`; `said_hello`
/// tells whether the worker's `hello` came already.
pub(crate) fn check(
    sender: usize,
    workers: usize,
    said_hello: bool,
    message: &Message,
) -> Result<(), Violation> {
    let kind = message.kind_name();
    // The sender itself, as the worker must name it.
    let own = |field: &'static str, claimed: WorkerIndex| {
        if claimed as usize == sender {
            Ok(())
        } else {
            Err(Violation::Impersonation {
                kind,
                field,
                claimed,
                sender,
            })
        }
    };
    if !said_hello && !matches!(message, Message::Hello { .. }) {
        return Err(Violation::BeforeHello(kind));
    }
    match message {
        Message::Hello { worker, .. } => {
            if said_hello {
                return Err(Violation::HelloAgain);
            }
            own("worker", *worker)
        }
        Message::Drain
        | Message::Retire
        | Message::WorkerExited { .. }
        | Message::WorkerJoined { .. }
        | Message::RestoreSessionResponse { .. }
        | Message::RedisEntry { .. }
        | Message::RedisMessage { .. }
        | Message::FenceDone { .. } => Err(Violation::PrimaryOnly(kind)),
        Message::RestoreSession { from, .. }
        | Message::FetchSockets { from, .. }
        | Message::ServerSideEmit { from, .. } => own("from", *from),
        Message::FetchSocketsResponse { from, to, .. }
        | Message::ServerSideEmitResponse { from, to, .. }
        | Message::BroadcastClientCount { from, to, .. }
        | Message::BroadcastAck { from, to, .. } => {
            own("from", *from)?;
            // Requests are relayed to the other workers only: nobody answers itself.
            if *to as usize >= workers || *to as usize == sender {
                return Err(Violation::BadRecipient {
                    kind,
                    to: *to,
                    workers,
                    sender,
                });
            }
            Ok(())
        }
        Message::Broadcast(b) => {
            let packet = match b.frames.as_slice() {
                [Frame::Text(_), ..] => true,
                // The msgpack parser: one binary message, attachments inline.
                [Frame::Binary(_)] => true,
                _ => false,
            };
            if !packet {
                return Err(Violation::NoTextFrame);
            }
            match b.ack {
                Some((from, ..)) => own("ack.from", from),
                None => Ok(()),
            }
        }
        Message::Ready
        | Message::Stats { .. }
        | Message::Metrics { .. }
        | Message::Heartbeat
        | Message::RecoveryOn { .. }
        | Message::SessionUpdate(_)
        | Message::SessionClosed { .. }
        | Message::RoomInterest { .. }
        | Message::RedisMember { .. }
        // About another process, by its lane and epoch: the primary checks
        // both against its own view (see `Primary::link_stuck`).
        | Message::LinkStuck { .. }
        | Message::SocketsJoin { .. }
        | Message::SocketsLeave { .. }
        | Message::DisconnectSockets { .. }
        | Message::Fence { .. }
        | Message::FenceRequest { .. } => Ok(()),
    }
}

/// Whether a `hello`'s protocol version is the primary's.
pub(crate) fn version_matches(message: &Message) -> bool {
    !matches!(message, Message::Hello { version, .. } if *version != PROTOCOL_VERSION)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rsio_ipc::{Broadcast, EventPayload, Session, Target};

    use super::*;

    const WORKERS: usize = 3;
    const SENDER: usize = 1;

    fn broadcast(frames: Vec<Frame>, ack: Option<(WorkerIndex, u64, u64)>) -> Message {
        Message::Broadcast(Broadcast {
            nsp: "/".into(),
            target: Target::default(),
            ack,
            offset: None,
            frames,
        })
    }

    fn text() -> Vec<Frame> {
        vec![Frame::Text(Bytes::from_static(b"42[\"a\"]"))]
    }

    fn ack(from: WorkerIndex, to: WorkerIndex) -> Message {
        Message::BroadcastAck {
            from,
            to,
            request: 1,
            payload: EventPayload::default(),
        }
    }

    #[test]
    fn what_a_worker_may_send() {
        let ok = [
            Message::Hello {
                version: PROTOCOL_VERSION,
                worker: 1,
                pid: 0,
            },
            Message::Ready,
            Message::Heartbeat,
            Message::Fence { id: 7 },
            Message::FenceRequest { id: 8 },
            Message::Stats { connections: 3 },
            Message::Metrics {
                counters: vec![1],
                gauges: Vec::new(),
                namespaces: vec![("/".into(), 1)],
            },
            Message::SessionUpdate(Session::default()),
            broadcast(text(), None),
            broadcast(text(), Some((1, 7, 9))),
            Message::FetchSockets {
                from: 1,
                nsp: "/".into(),
                target: Target::default(),
                request: 4,
            },
            Message::RestoreSession {
                from: 1,
                request: 2,
                nsp: "/".into(),
                pid: "p".into(),
                offset: "0".into(),
            },
            ack(1, 0),
            ack(1, 2),
            Message::FetchSocketsResponse {
                from: 1,
                to: 0,
                request: 1,
                sockets: Vec::new(),
            },
            Message::LinkStuck { lane: 2, epoch: 5 },
        ];
        for m in &ok {
            let said_hello = !matches!(m, Message::Hello { .. });
            assert_eq!(check(SENDER, WORKERS, said_hello, m), Ok(()), "{m:?}");
        }
    }

    #[test]
    fn what_a_worker_may_not_send() {
        let bad: Vec<(Message, bool)> = vec![
            // someone else's hello, or a second one
            (
                Message::Hello {
                    version: PROTOCOL_VERSION,
                    worker: 0,
                    pid: 1,
                },
                false,
            ),
            (
                Message::Hello {
                    version: PROTOCOL_VERSION,
                    worker: 1,
                    pid: 1,
                },
                true,
            ),
            // anything before the hello
            (Message::Ready, false),
            (Message::Heartbeat, false),
            // the primary's messages
            (Message::Drain, true),
            (Message::WorkerJoined { worker: 0 }, true),
            (Message::FenceDone { id: 1 }, true),
            (Message::WorkerExited { worker: 2 }, true),
            (
                Message::RestoreSessionResponse {
                    to: 0,
                    request: 1,
                    session: None,
                    missed: Vec::new(),
                    horizon: 0,
                },
                true,
            ),
            // requests in another worker's name
            (
                Message::FetchSockets {
                    from: 0,
                    nsp: "/".into(),
                    target: Target::default(),
                    request: 4,
                },
                true,
            ),
            (
                Message::ServerSideEmit {
                    from: 2,
                    nsp: "/".into(),
                    event: "e".into(),
                    payload: EventPayload::default(),
                    request: None,
                },
                true,
            ),
            (
                Message::RestoreSession {
                    from: 0,
                    request: 2,
                    nsp: "/".into(),
                    pid: "p".into(),
                    offset: "0".into(),
                },
                true,
            ),
            (broadcast(text(), Some((0, 7, 9))), true),
            // responses: from another worker, to nobody, to itself
            (ack(0, 2), true),
            (ack(1, 3), true),
            (ack(1, u16::MAX), true),
            (ack(1, 1), true),
            (
                Message::BroadcastClientCount {
                    from: 1,
                    to: 9,
                    request: 1,
                    count: 1,
                },
                true,
            ),
            // a broadcast without its packet
            (broadcast(Vec::new(), None), true),
            (
                broadcast(
                    vec![
                        Frame::Binary(Bytes::from_static(b"x")),
                        Frame::Binary(Bytes::from_static(b"y")),
                    ],
                    None,
                ),
                true,
            ),
        ];
        for (m, said_hello) in &bad {
            assert!(
                check(SENDER, WORKERS, *said_hello, m).is_err(),
                "accepted {m:?}"
            );
        }
    }

    #[test]
    fn version_check() {
        let hello = |version| Message::Hello {
            version,
            worker: 0,
            pid: 1,
        };
        assert!(version_matches(&hello(PROTOCOL_VERSION)));
        assert!(!version_matches(&hello(PROTOCOL_VERSION + 1)));
        assert!(version_matches(&Message::Ready));
    }
}
