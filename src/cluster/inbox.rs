//! The primary's reading of its workers' sockets, in sweeps.
//!
//! Every worker's socket is read by one task, in sweeps: each sweep reads all
//! that every socket has. What a sweep brought is held until the next sweep is
//! done, and the room reports ([`Message::RoomInterest`]) that either brought go
//! out first. So when the primary routes an operation aimed at rooms, it knows
//! of every room that any worker had reported before that operation was sent: a
//! `join` that returned on one worker (its report is in the primary's socket by
//! then) is seen by any broadcast it causes on another worker, even though the
//! two sockets are read apart.

use std::{
    future::poll_fn,
    task::{Context, Poll},
};

use rsio_ipc::{CodecError, IpcReader, Message};
use tokio::sync::mpsc;
use tracing::debug;

use super::primary::Event;

/// Events handed to the primary in one go, at most (more wait for the next call).
const BATCH: usize = 256;

/// The reading half of one worker incarnation's socket.
pub(super) struct Reading {
    pub worker: usize,
    pub generation: u64,
    pub reader: IpcReader,
}

/// Every worker's socket, read in sweeps.
pub(super) struct Inbox {
    readers: Vec<Reading>,
    added: mpsc::UnboundedReceiver<Reading>,
    /// What the last sweep brought, minus its room reports: released after the next sweep.
    held: Vec<Event>,
}

impl Inbox {
    /// An inbox, and where new workers' sockets are handed to it.
    pub(super) fn new() -> (Inbox, mpsc::UnboundedSender<Reading>) {
        let (tx, added) = mpsc::unbounded_channel();
        let inbox = Inbox {
            readers: Vec::new(),
            added,
            held: Vec::new(),
        };
        (inbox, tx)
    }

    /// The next events, in the order described in the module doc.
    pub(super) async fn next_batch(&mut self) -> Vec<Event> {
        // A sweep must see all that a socket has: tokio's budget would make a
        // socket look empty when it is not.
        tokio::task::unconstrained(poll_fn(|cx| self.poll_batch(cx))).await
    }

    fn poll_batch(&mut self, cx: &mut Context<'_>) -> Poll<Vec<Event>> {
        while let Poll::Ready(Some(reading)) = self.added.poll_recv(cx) {
            self.readers.push(reading);
        }
        let mut out = Vec::new();
        loop {
            let fresh = self.sweep(cx);
            if fresh.is_empty() {
                out.append(&mut self.held);
                break;
            }
            let (reports, rest): (Vec<Event>, Vec<Event>) =
                fresh.into_iter().partition(is_room_report);
            out.extend(reports);
            out.append(&mut self.held);
            self.held = rest;
            if out.len() >= BATCH {
                break;
            }
        }
        if out.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(out)
        }
    }

    /// Reads every socket until it has nothing more (each then wakes this task
    /// when it has); a socket that ended or failed is dropped, with its event.
    fn sweep(&mut self, cx: &mut Context<'_>) -> Vec<Event> {
        let mut out = Vec::new();
        self.readers.retain_mut(|r| loop {
            let (worker, generation) = (r.worker, r.generation);
            match r.reader.poll_next_frame(cx) {
                Poll::Pending => return true,
                Poll::Ready(Some(Ok((message, frame)))) => out.push(Event::Frame {
                    worker,
                    generation,
                    message,
                    frame,
                }),
                Poll::Ready(end) => {
                    if let Some(Err(err)) = end {
                        // A worker that exits can reset its end: that is its exit, not news.
                        let reset = matches!(&err, CodecError::Io(e)
                            if e.kind() == std::io::ErrorKind::ConnectionReset);
                        if reset {
                            debug!(target: "cluster", worker, "ipc: {err}");
                        } else {
                            out.push(Event::Bad {
                                worker,
                                generation,
                                reason: err.to_string(),
                            });
                        }
                    }
                    out.push(Event::IpcClosed { worker, generation });
                    return false;
                }
            }
        });
        out
    }
}

fn is_room_report(event: &Event) -> bool {
    matches!(
        event,
        Event::Frame {
            message: Message::RoomInterest { .. },
            ..
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsio_ipc::{Broadcast, Frame, IpcConnection, IpcSender, Target};

    fn pair() -> (IpcSender, IpcReader) {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let (_, sender) =
            IpcConnection::new(tokio::net::UnixStream::from_std(a).unwrap()).into_split();
        let (reader, _) =
            IpcConnection::new(tokio::net::UnixStream::from_std(b).unwrap()).into_split();
        (sender, reader)
    }

    fn broadcast(room: &str) -> Message {
        Message::Broadcast(Broadcast {
            nsp: "/".into(),
            target: Target {
                rooms: vec![room.into()],
                ..Target::default()
            },
            ack: None,
            offset: None,
            frames: vec![Frame::Text(bytes::Bytes::from_static(b"42[\"x\"]"))],
        })
    }

    fn report(room: &str) -> Message {
        Message::RoomInterest {
            nsp: "/".into(),
            room: room.into(),
            present: true,
        }
    }

    fn summary(events: &[Event]) -> Vec<(usize, &'static str)> {
        events
            .iter()
            .map(|e| match e {
                Event::Frame {
                    worker, message, ..
                } => (*worker, message.kind_name()),
                Event::IpcClosed { worker, .. } => (*worker, "closed"),
                Event::Bad { worker, .. } => (*worker, "bad"),
                _ => (usize::MAX, "other"),
            })
            .collect()
    }

    #[tokio::test]
    async fn room_reports_go_before_what_was_read_with_or_before_them() {
        let (inbox_tx, mut inbox) = {
            let (inbox, tx) = Inbox::new();
            (tx, inbox)
        };
        let (a_tx, a_rx) = pair();
        let (b_tx, b_rx) = pair();
        // Worker 0 is read first in every sweep.
        for (worker, reader) in [(0, a_rx), (1, b_rx)] {
            let _ = inbox_tx.send(Reading {
                worker,
                generation: 1,
                reader,
            });
        }
        // Worker 1 reported the room before worker 0's broadcast to it was read.
        b_tx.send(report("r")).unwrap();
        a_tx.send(broadcast("r")).unwrap();
        a_tx.send(Message::Heartbeat).unwrap();
        b_tx.send(Message::Heartbeat).unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let mut got = Vec::new();
        while got.len() < 4 {
            got.extend(inbox.next_batch().await);
        }
        assert_eq!(
            summary(&got),
            vec![
                (1, "room-interest"),
                (0, "broadcast"),
                (0, "heartbeat"),
                (1, "heartbeat")
            ]
        );
    }
}
