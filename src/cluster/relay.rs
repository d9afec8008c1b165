//! The primary's data path: relaying adapter operations to the workers they
//! concern (by room interest), numbering recoverable broadcasts, answering for
//! the workers left out of a request, and the writes to each worker's socket.
//! Broadcasts that need no sequencing (no recovery, no acks, no room forced
//! through the primary) do not come here: the workers send them to each other
//! over the direct links the primary set up (see [`super::lanes`]).

use rsio_ipc::{
    Broadcast, EncodedFrame, Message, SendError, WorkerIndex, DEFAULT_MAX_FRAME_LENGTH,
};
use tracing::{error, warn};

use super::{interest::Reach, primary::Primary};

impl Primary {
    /// Sends `message` to every worker but `from` (control messages: rare).
    pub(super) fn send_others(&mut self, from: usize, message: &Message) {
        match EncodedFrame::encode(message, DEFAULT_MAX_FRAME_LENGTH) {
            Ok(frame) => self.send_all(Some(from), &frame),
            Err(err) => error!(target: "cluster", "cannot encode {}: {err}", message.kind_name()),
        }
    }

    /// Sends `frame` to every worker but `except`.
    pub(super) fn send_all(&mut self, except: Option<usize>, frame: &EncodedFrame) {
        for j in 0..self.slots.len() {
            if Some(j) != except {
                self.send_to(j, frame.clone());
            }
        }
    }

    /// Sends `frame` to worker `j`; a worker that lets its backlog pass the limit
    /// does not read (stopped, stuck): it is killed and restarted.
    pub(super) fn send_to(&mut self, j: usize, frame: EncodedFrame) {
        if let Some((_, ipc)) = &mut self.metrics {
            ipc[j].1 += frame.len() as u64;
        }
        let result = match &self.slots[j].sender {
            Some(s) => s.send_frame(frame),
            None => return,
        };
        if let Err(SendError::Backlog { limit }) = result {
            self.kill(
                j,
                format_args!("it does not read its ipc socket (backlog over {limit} bytes)"),
            );
        }
    }

    /// A recoverable broadcast of `worker`: numbered, then sent to the workers
    /// with members of its rooms.
    pub(super) fn relay_sequenced(&mut self, worker: usize, b: &Broadcast) {
        // A recoverable packet: numbered here, in one sequence for the whole
        // cluster, then sent to every worker, the emitter included, so that
        // every client sees packets in offset order.
        let mut b = b.clone();
        if !self.sessions.sequence(&mut b) {
            b.offset = None;
        }
        let reach = self.interest.reach(&b.nsp, &b.target.rooms);
        match EncodedFrame::encode(&Message::Broadcast(b), DEFAULT_MAX_FRAME_LENGTH) {
            Ok(frame) => {
                for j in 0..self.slots.len() {
                    if reach.contains(j) {
                        self.send_to(j, frame.clone());
                    }
                }
            }
            Err(err) => warn!(target: "cluster", worker, "cannot relay a broadcast: {err}"),
        }
    }

    /// Forwards an adapter operation from `from` to the other workers it concerns:
    /// those with members of its rooms, or all of them. The frame is forwarded as
    /// received (no decode, no re-encode); the workers left out of a request are
    /// answered for here, with nothing, so the requester never waits for them. From
    /// a `retiring` process, the process now serving its slot is one of the others.
    pub(super) fn relay(
        &mut self,
        from: usize,
        retiring: bool,
        message: &Message,
        frame: EncodedFrame,
    ) {
        let reach = match message {
            Message::Broadcast(Broadcast { nsp, target, .. })
            | Message::SocketsJoin { nsp, target, .. }
            | Message::SocketsLeave { nsp, target, .. }
            | Message::DisconnectSockets { nsp, target, .. }
            | Message::FetchSockets { nsp, target, .. } => self.interest.reach(nsp, &target.rooms),
            _ => Reach::All,
        };
        for j in 0..self.slots.len() {
            if (j == from && !retiring) || self.slots[j].sender.is_none() {
                continue;
            }
            if reach.contains(j) {
                self.send_to(j, frame.clone());
                if let Message::SocketsJoin { nsp, rooms, .. } = message {
                    // What the joiner sends next must reach the sockets this join
                    // adds there: count the worker in until it says otherwise.
                    for room in rooms {
                        self.interest.set(j, nsp, room, true);
                    }
                }
            } else if let Some(empty) = empty_answer(message, j) {
                match EncodedFrame::encode(&empty, DEFAULT_MAX_FRAME_LENGTH) {
                    Ok(frame) => self.send_to(from, frame),
                    Err(err) => warn!(target: "cluster", "cannot encode an empty answer: {err}"),
                }
            }
        }
    }
}

/// What worker `j`, which an operation did not reach, would have answered: for a
/// request, an empty answer; `None` for an operation that expects none.
fn empty_answer(message: &Message, j: usize) -> Option<Message> {
    let from = j as WorkerIndex;
    match message {
        Message::Broadcast(Broadcast {
            ack: Some((to, request, _)),
            ..
        }) => Some(Message::BroadcastClientCount {
            from,
            to: *to,
            request: *request,
            count: 0,
        }),
        Message::FetchSockets {
            from: to, request, ..
        } => Some(Message::FetchSocketsResponse {
            from,
            to: *to,
            request: *request,
            sockets: Vec::new(),
        }),
        _ => None,
    }
}
