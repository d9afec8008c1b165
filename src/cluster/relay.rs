//! The primary's data path: relaying adapter operations to the workers they
//! concern (by room interest), numbering recoverable broadcasts, answering for
//! the workers left out of a request, and the writes to each worker's socket.
//! Broadcasts that need no sequencing (no recovery, no acks, no room forced
//! through the primary) do not come here: the workers send them to each other
//! over the direct links the primary set up (see [`super::lanes`]), and report
//! a link whose process does not read it ([`Message::LinkStuck`]), never
//! rerouting a broadcast here (see [`super::supervise`]). With
//! `--redis`, the only broadcasts here are those a worker could not write to
//! Redis: they go to every other worker (see [`super::redis`]).

use rsio_ipc::{
    Broadcast, EncodedFrame, Message, SendError, WorkerIndex, DEFAULT_MAX_FRAME_LENGTH,
};
use tracing::{error, warn};

use super::{fences::Then, interest::Reach, primary::Primary};
use crate::adapter::hints::forced_by;

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
    /// does not read (stopped, stuck): it is killed and restarted (as is one
    /// that does not read a direct link: [`Primary::link_stuck`]).
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
            // With `--redis` the workers' adapters are Redis' and report no
            // rooms: what a worker relays (a broadcast Redis never got) goes
            // to every other worker, which applies its rooms itself.
            _ if self.config.redis.is_some() => Reach::All,
            Message::Broadcast(Broadcast { nsp, target, .. })
            | Message::SocketsJoin { nsp, target, .. }
            | Message::SocketsLeave { nsp, target, .. }
            | Message::DisconnectSockets { nsp, target, .. }
            | Message::FetchSockets { nsp, target, .. } => self.interest.reach(nsp, &target.rooms),
            _ => Reach::All,
        };
        // With `--redis` no worker forces rooms (its adapter is Redis').
        let fenced = self.config.redis.is_none() && forced_by(message).is_some();
        let mut reached = Vec::new();
        for j in 0..self.slots.len() {
            if (j == from && !retiring) || self.slots[j].sender.is_none() {
                continue;
            }
            if reach.contains(j) {
                self.send_to(j, frame.clone());
                if fenced {
                    reached.push(j);
                }
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
        if fenced {
            self.fence_forced(message, reached);
        }
    }

    /// Follows an operation that forced rooms (see [`forced_by`]) with a fence
    /// to each worker it `reached`; ends the force at once when it reached none.
    fn fence_forced(&mut self, message: &Message, reached: Vec<usize>) {
        let Some(slots) = forced_by(message)
            .zip(self.lanes.table())
            .map(|((nsp, rooms), table)| table.forced_slots(nsp, rooms))
        else {
            return;
        };
        self.fence_slots(slots, reached);
    }

    /// Sends a fence to each worker `reached` by an operation that forced
    /// `slots`, which are released once all of them echoed it (at once when
    /// it reached none).
    pub(super) fn fence_slots(&mut self, slots: Vec<usize>, reached: Vec<usize>) {
        self.fence(Then::Release(slots), reached);
    }

    /// Worker `from` asks for a fence behind everything it sent so far (see
    /// `adapter::cluster::sticky`): one to every other worker, then
    /// `FenceDone { id }` back to it.
    pub(super) fn fence_request(&mut self, from: usize, id: u64) {
        let others = (0..self.slots.len())
            .filter(|&j| j != from && self.slots[j].sender.is_some())
            .collect();
        self.fence(Then::Reply { to: from, id }, others);
    }

    /// Sends a fence to each of `workers`, to do `then` once all echoed it (at
    /// once when there is none).
    fn fence(&mut self, then: Then, workers: Vec<usize>) {
        match self.fences.open(then, workers.clone()) {
            Ok(id) => {
                match EncodedFrame::encode(&Message::Fence { id }, DEFAULT_MAX_FRAME_LENGTH) {
                    Ok(frame) => {
                        for j in workers {
                            self.send_to(j, frame.clone());
                        }
                    }
                    Err(err) => error!(target: "cluster", "cannot encode a fence: {err}"),
                }
            }
            Err(then) => self.then(then),
        }
    }

    /// What a fence does once all its workers echoed it.
    fn then(&mut self, then: Then) {
        match then {
            Then::Release(slots) => self.release(&slots),
            Then::Reply { to, id } => {
                match EncodedFrame::encode(&Message::FenceDone { id }, DEFAULT_MAX_FRAME_LENGTH) {
                    Ok(frame) => self.send_to(to, frame),
                    Err(err) => error!(target: "cluster", "cannot encode a fence's answer: {err}"),
                }
            }
        }
    }

    /// Ends one force on each of `slots`.
    pub(super) fn release(&self, slots: &[usize]) {
        if let Some(table) = self.lanes.table() {
            table.release(slots);
        }
    }

    /// `worker` answered fence `id`.
    pub(super) fn fenced(&mut self, worker: usize, id: u64) {
        if let Some(then) = self.fences.answered(worker, id) {
            self.then(then);
        }
    }

    /// `worker`'s process is gone or replaced: no fence waits for it.
    pub(super) fn unfence(&mut self, worker: usize) {
        for then in self.fences.worker_gone(worker) {
            self.then(then);
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use rsio_ipc::{Frame, IpcReader, Target};

    use super::*;
    use crate::cluster::config::{RedisAdapterKind, RedisOptions};

    fn broadcast(rooms: &[&str], text: &'static str) -> Message {
        Message::Broadcast(Broadcast {
            nsp: "/".into(),
            target: Target {
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                ..Target::default()
            },
            ack: None,
            offset: None,
            frames: vec![Frame::Text(Bytes::from_static(text.as_bytes()))],
        })
    }

    async fn next_text(reader: &mut IpcReader) -> Bytes {
        let got = tokio::time::timeout(Duration::from_secs(5), reader.next()).await;
        match got {
            Ok(Some(Ok(Message::Broadcast(b)))) => b.frames[0].bytes().clone(),
            other => panic!("expected a broadcast, got {other:?}"),
        }
    }

    /// What workers 1 and 2 get first when worker 0 relays a broadcast to a
    /// room no worker reported, then one to everyone.
    async fn first_received(redis: bool) -> Vec<Bytes> {
        let mut primary = Primary::for_tests(3);
        if redis {
            primary.config.redis = Some(RedisOptions {
                url: "redis://127.0.0.1:1".into(),
                adapter: RedisAdapterKind::Streams,
            });
        }
        let mut readers = primary.connect_for_tests();
        for message in [
            broadcast(&["r"], "42[\"room\"]"),
            broadcast(&[], "42[\"all\"]"),
        ] {
            let frame = EncodedFrame::encode(&message, DEFAULT_MAX_FRAME_LENGTH).unwrap();
            primary.on_message(0, message, frame, false);
        }
        let mut got = Vec::new();
        for reader in &mut readers[1..] {
            got.push(next_text(reader).await);
        }
        got
    }

    #[tokio::test]
    async fn with_redis_a_relayed_broadcast_reaches_every_other_worker() {
        // The workers' Redis adapters report no rooms: each worker applies them.
        let room = Bytes::from_static(b"42[\"room\"]");
        assert_eq!(first_received(true).await, vec![room.clone(), room]);
        // Without Redis, room interest keeps it from workers without members.
        let all = Bytes::from_static(b"42[\"all\"]");
        assert_eq!(first_received(false).await, vec![all.clone(), all]);
    }

    async fn next_message(reader: &mut IpcReader) -> Message {
        match tokio::time::timeout(Duration::from_secs(5), reader.next()).await {
            Ok(Some(Ok(m))) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// A primary of 3 workers with a hint table, and what each worker reads.
    fn with_table() -> (Primary, Vec<IpcReader>) {
        let mut primary = Primary::for_tests(3);
        primary.lanes = super::super::lanes::Lanes::new(3);
        let readers = primary.connect_for_tests();
        (primary, readers)
    }

    /// Worker `from` sends `op` as a worker does: its rooms forced first.
    fn send_forcing(primary: &mut Primary, from: usize, op: Message) {
        let table = primary.lanes.table().unwrap();
        let (nsp, rooms) = forced_by(&op).unwrap();
        table.force(&table.forced_slots(nsp, rooms));
        let frame = EncodedFrame::encode(&op, DEFAULT_MAX_FRAME_LENGTH).unwrap();
        primary.on_message(from, op, frame, false);
    }

    fn answer(primary: &mut Primary, from: usize, fence: Message) {
        let frame = EncodedFrame::encode(&fence, DEFAULT_MAX_FRAME_LENGTH).unwrap();
        primary.on_message(from, fence, frame, false);
    }

    fn join(rooms: &[&str]) -> Message {
        Message::SocketsJoin {
            nsp: "/".into(),
            target: Target::default(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
        }
    }

    #[tokio::test]
    async fn a_forced_room_is_released_once_every_worker_reached_handled_the_operation() {
        let (mut primary, mut readers) = with_table();
        send_forcing(&mut primary, 0, join(&["j"]));
        let slot = primary.lanes.table().unwrap().slot("/", "j");
        let mut fences = Vec::new();
        for reader in &mut readers[1..] {
            assert!(matches!(
                next_message(reader).await,
                Message::SocketsJoin { .. }
            ));
            let fence = next_message(reader).await;
            assert!(
                matches!(fence, Message::Fence { .. }),
                "right after it: {fence:?}"
            );
            fences.push(fence);
        }
        let forced = |p: &Primary| p.lanes.table().unwrap().forced(slot);
        assert!(forced(&primary));
        answer(&mut primary, 1, fences[0].clone());
        assert!(forced(&primary), "worker 2 has not handled it yet");
        answer(&mut primary, 0, fences[1].clone());
        assert!(forced(&primary), "worker 0 was not waited for");
        answer(&mut primary, 2, fences[1].clone());
        assert!(!forced(&primary), "released");
    }

    #[tokio::test]
    async fn a_worker_gone_is_not_waited_for_and_an_operation_reaching_none_releases_at_once() {
        let (mut primary, mut readers) = with_table();
        send_forcing(&mut primary, 0, join(&["g"]));
        let slot = primary.lanes.table().unwrap().slot("/", "g");
        let forced = |p: &Primary| p.lanes.table().unwrap().forced(slot);
        let _ = next_message(&mut readers[1]).await;
        let fence = next_message(&mut readers[1]).await;
        answer(&mut primary, 1, fence);
        assert!(forced(&primary));
        primary.unfence(2);
        assert!(
            !forced(&primary),
            "worker 2 exited: nobody left to wait for"
        );

        // A leave of a room no other worker has: relayed to nobody.
        let leave = Message::SocketsLeave {
            nsp: "/".into(),
            target: Target {
                rooms: vec!["only-here".into()],
                ..Target::default()
            },
            rooms: vec!["l".into()],
        };
        send_forcing(&mut primary, 0, leave);
        let slot = primary.lanes.table().unwrap().slot("/", "l");
        assert!(!primary.lanes.table().unwrap().forced(slot));
    }

    #[tokio::test]
    async fn a_worker_s_fence_request_is_answered_once_every_other_worker_echoed_a_fence() {
        let (mut primary, mut readers) = with_table();
        answer(&mut primary, 0, Message::FenceRequest { id: 9 });
        let mut fences = Vec::new();
        for reader in &mut readers[1..] {
            let fence = next_message(reader).await;
            assert!(matches!(fence, Message::Fence { .. }), "{fence:?}");
            fences.push(fence);
        }
        answer(&mut primary, 1, fences[0].clone());
        answer(&mut primary, 2, fences[1].clone());
        assert!(
            matches!(
                next_message(&mut readers[0]).await,
                Message::FenceDone { id: 9 }
            ),
            "answered to the worker that asked, after both echoes"
        );
    }
}
