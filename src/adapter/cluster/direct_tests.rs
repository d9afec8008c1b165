//! Tests of the direct links: records, backlog, what a link accepts, and the
//! answers to acked broadcasts over them.
use std::{
    io::{Read, Write},
    time::Duration,
};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use super::*;

fn channel() -> (OwnedFd, OwnedFd) {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .unwrap()
}

#[test]
fn a_link_record_carries_its_lane_epoch_and_descriptor() {
    let (primary, worker) = channel();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    send_link(primary.as_fd(), 5, 42, theirs.as_fd()).unwrap();
    drop(theirs);
    let Received::Link { lane, epoch, fd } = recv_link(worker.as_fd()).unwrap() else {
        panic!("expected a link");
    };
    assert_eq!((lane, epoch), (5, 42));
    // The descriptor received is the peer's end of the pair.
    let mut link = std::os::unix::net::UnixStream::from(fd);
    link.write_all(b"hi").unwrap();
    let mut buf = [0u8; 2];
    (&ours).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");
    assert!(
        matches!(recv_link(worker.as_fd()), Err(Errno::EAGAIN)),
        "nothing more"
    );
    drop(primary);
    assert!(matches!(recv_link(worker.as_fd()), Ok(Received::End)));
}

/// A peer's broadcast as a link carries it: `ack` and `offset` as given.
fn broadcast(ack: Option<(u16, u64, u64)>, offset: Option<u64>) -> Message {
    Message::Broadcast(rsio_ipc::Broadcast {
        nsp: "/".into(),
        target: rsio_ipc::Target::default(),
        ack,
        offset,
        frames: vec![rsio_ipc::Frame::Text(bytes::Bytes::from_static(
            b"42[\"e\"]",
        ))],
    })
}

fn count(from: WorkerIndex, to: WorkerIndex, request: u64, count: u64) -> Message {
    Message::BroadcastClientCount {
        from,
        to,
        request,
        count,
    }
}

fn ack(from: WorkerIndex, to: WorkerIndex, request: u64) -> Message {
    Message::BroadcastAck {
        from,
        to,
        request,
        payload: rsio_ipc::EventPayload {
            json: bytes::Bytes::from_static(b"\"pong\""),
            attachments: Vec::new(),
        },
    }
}

/// Worker 0 of 3 (its primary's end kept open), and its link to the process
/// of lane 1 (worker 1), read by [`read_link`]: the task, and the peer's end.
fn linked() -> (
    Arc<ClusterLink>,
    tokio::net::UnixStream,
    tokio::task::JoinHandle<()>,
    IpcConnection,
) {
    let (to_primary, primary) = tokio::net::UnixStream::pair().unwrap();
    let (_, sender) = IpcConnection::new(to_primary).into_split();
    let link = ClusterLink::new(0, 3, sender);
    let (ours, theirs) = tokio::net::UnixStream::pair().unwrap();
    let (reader, reply) = IpcConnection::new(ours).into_split();
    let peer = LinkPeer {
        lane: 1,
        epoch: 1,
        worker: 1,
    };
    let task = tokio::spawn(read_link(Arc::downgrade(&link), peer, reader, reply));
    (link, primary, task, IpcConnection::new(theirs))
}

#[tokio::test]
async fn a_link_carries_its_peers_broadcasts_and_answers_and_nothing_else() {
    for bad in [
        // Not its own: the answers would go to the wrong worker.
        broadcast(Some((2, 7, 3)), None),
        broadcast(None, Some(9)),
        Message::SocketsJoin {
            nsp: "/".into(),
            target: rsio_ipc::Target::default(),
            rooms: vec!["r".into()],
        },
        // Answers in another worker's name, or for another worker.
        count(2, 0, 7, 1),
        ack(1, 2, 7),
    ] {
        let (_link, _primary, task, peer) = linked();
        // Its broadcasts, acked or not, and answers to this worker, are
        // taken, and the link stays open.
        for good in [
            broadcast(None, None),
            broadcast(Some((1, 7, 3)), None),
            count(1, 0, 7, 1),
            ack(1, 0, 7),
        ] {
            peer.sender().send(good).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!task.is_finished(), "what a link carries closed it");
        let what = format!("{bad:?}");
        peer.sender().send(bad).unwrap();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .unwrap_or_else(|_| panic!("{what} on a link: still open"))
            .unwrap();
    }
}

/// The set of `l`.
fn lanes(l: &[usize]) -> LaneSet {
    let mut set = LaneSet::default();
    l.iter().for_each(|&l| set.insert(l));
    set
}

#[tokio::test]
async fn answers_over_a_link_reach_the_emitter_and_its_end_stops_what_it_owes() {
    use super::super::acks::PendingAck;
    use crate::adapter::RemoteAck;
    let (link, _primary, task, peer) = linked();
    // Request 1 was written to lane 1, which answers nothing; request 2 to
    // lane 2 only; request 3 to lanes 1 and 2, and lane 1 answers it all.
    let mut rx = Vec::new();
    for (request, written) in [(1, lanes(&[1])), (2, lanes(&[2])), (3, lanes(&[1, 2]))] {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        link.acks()
            .insert(request, PendingAck::direct(tx, &written));
        link.written(request, &written);
        rx.push(events);
    }
    peer.sender().send(count(1, 0, 3, 1)).unwrap();
    peer.sender().send(ack(1, 0, 3)).unwrap();
    // A late answer, to a request no longer waiting: dropped.
    peer.sender().send(count(1, 0, 99, 1)).unwrap();
    let next = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<RemoteAck>| {
        let got = rx.try_recv();
        format!("{got:?}")
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(next(&mut rx[2]), "Ok(ClientCount(1, 1))");
    assert!(next(&mut rx[2]).starts_with("Ok(Ack("));
    // Lane 1's process goes.
    drop(peer);
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .expect("the link ends with its peer")
        .unwrap();
    assert_eq!(
        next(&mut rx[0]),
        "Ok(ServerGone(1))",
        "it owed request 1 its count"
    );
    assert_eq!(next(&mut rx[1]), "Err(Empty)", "request 2 never went to it");
    assert_eq!(
        next(&mut rx[2]),
        "Err(Empty)",
        "request 3 had all it owed: it waits for lane 2 only"
    );
}

#[tokio::test]
async fn a_link_that_ends_before_its_write_is_known_stops_the_wait_only_if_written() {
    use super::super::acks::PendingAck;
    let (link, _primary, _task, _peer) = linked();
    // Both registered for lanes 1 and 2; lane 1's link ends before the
    // writes are known. Request 1 reached lane 2 only, request 2 both.
    let mut rx = Vec::new();
    for request in [1, 2] {
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        link.acks()
            .insert(request, PendingAck::direct(tx, &lanes(&[1, 2])));
        rx.push(events);
    }
    link.acks_link_gone(1, 1);
    assert!(rx[0].try_recv().is_err(), "not known to be written: waits");
    assert!(rx[1].try_recv().is_err(), "not known to be written: waits");
    link.written(1, &lanes(&[2]));
    link.written(2, &lanes(&[1, 2]));
    assert!(
        rx[0].try_recv().is_err(),
        "never written to the lane that went: waits for lane 2"
    );
    assert_eq!(
        format!("{:?}", rx[1].try_recv()),
        "Ok(ServerGone(1))",
        "written to the lane that went: its answers will not come"
    );
}

/// A peer process that reads its link to the end, counting the bytes.
fn reading(peer: std::os::unix::net::UnixStream) -> Arc<AtomicU64> {
    let read = Arc::new(AtomicU64::new(0));
    let count = read.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = (&peer).read(&mut buf) {
            count.fetch_add(n as u64, Ordering::Relaxed);
        }
    });
    read
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_whose_peer_does_not_read_is_skipped_and_reported_once() {
    const MAX_QUEUED: usize = 64 * 1024;
    let (to_primary, primary) = tokio::net::UnixStream::pair().unwrap();
    let (_, sender) = IpcConnection::new(to_primary).into_split();
    let (mut from_worker, _) = IpcConnection::new(primary).into_split();
    let link = ClusterLink::new(0, 3, sender);
    let (table, _fd) = HintTable::create(6).unwrap();
    let (channel, theirs) = channel();
    let direct = Direct::start(&link, theirs, 6, MAX_QUEUED).unwrap();
    // Lane 1 reads its link; lane 2 never does.
    let (a1, b1) = std::os::unix::net::UnixStream::pair().unwrap();
    let (a2, _b2) = std::os::unix::net::UnixStream::pair().unwrap();
    for (lane, epoch, fd) in [(1, 11, &a1), (2, 12, &a2)] {
        table.set_epoch(lane, epoch);
        send_link(channel.as_fd(), lane, epoch, fd.as_fd()).unwrap();
    }
    drop((a1, a2));
    let read_by_1 = reading(b1);
    let frame = EncodedFrame::encode(
        &Message::Broadcast(rsio_ipc::Broadcast {
            nsp: "/".into(),
            target: rsio_ipc::Target::default(),
            ack: None,
            offset: None,
            frames: vec![rsio_ipc::Frame::Text(bytes::Bytes::from(
                "x".repeat(16 * 1024),
            ))],
        }),
        rsio_ipc::DEFAULT_MAX_FRAME_LENGTH,
    )
    .unwrap();
    let mut both = LaneSet::default();
    both.insert(1);
    both.insert(2);
    let only_1 = {
        let mut s = LaneSet::default();
        s.insert(1);
        s
    };
    // Lane 2's socket buffer, then its backlog, fill up: from then on the
    // frame goes to lane 1 only.
    let mut sent = 0u64;
    let mut stuck_after = None;
    for i in 0..1000 {
        let written = direct.send(&table, &both, &frame);
        assert!(written.contains(1), "lane 1 reads: it gets every frame");
        sent += 1;
        if !written.contains(2) {
            stuck_after = Some(i);
            break;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert!(
        stuck_after.is_some(),
        "lane 2 never reached its backlog limit"
    );
    for _ in 0..20 {
        assert_eq!(direct.send(&table, &both, &frame), only_1);
        sent += 1;
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Lane 1 got every frame.
    let expected = sent * frame.len() as u64;
    for _ in 0..500 {
        if read_by_1.load(Ordering::Relaxed) >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(read_by_1.load(Ordering::Relaxed), expected);
    // The primary was told once, with lane 2's epoch.
    let told = tokio::time::timeout(Duration::from_secs(2), from_worker.next())
        .await
        .expect("a report")
        .expect("open")
        .unwrap();
    assert_eq!(told, Message::LinkStuck { lane: 2, epoch: 12 });
    let more = tokio::time::timeout(Duration::from_millis(300), from_worker.next()).await;
    assert!(more.is_err(), "reported again: {more:?}");
}

#[test]
fn a_record_without_a_descriptor_is_skipped() {
    let (primary, worker) = channel();
    nix::sys::socket::send(primary.as_raw_fd(), &[0u8; RECORD], MsgFlags::MSG_NOSIGNAL).unwrap();
    assert!(matches!(recv_link(worker.as_fd()), Ok(Received::Garbled)));
}
