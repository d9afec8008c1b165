//! The transport over real Unix stream socket pairs.

mod common;

use std::{os::unix::fs::MetadataExt, time::Duration};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rsio_ipc::{
    pair, Broadcast, CodecError, Frame, IpcCodec, IpcConnection, Message, SendError, Target,
};
use tokio::io::AsyncWriteExt;
use tokio::time::timeout;
use tokio_util::codec::Framed;

const LIMIT: Duration = Duration::from_secs(20);

fn connected() -> (IpcConnection, IpcConnection) {
    let (a, b) = pair().unwrap();
    (IpcConnection::new(a), IpcConnection::new(b))
}

async fn next(conn: &mut IpcConnection) -> Option<Result<Message, CodecError>> {
    timeout(LIMIT, conn.next()).await.expect("timed out")
}

#[tokio::test]
async fn every_sample_crosses_the_connection() {
    let (a, mut b) = connected();
    for msg in common::samples() {
        a.sender().send(msg).unwrap();
    }
    for msg in common::samples() {
        assert_eq!(next(&mut b).await.unwrap().unwrap(), msg);
    }
}

#[tokio::test]
async fn every_sample_crosses_a_framed_pair() {
    let (a, b) = pair().unwrap();
    let mut a = Framed::new(a, IpcCodec::new());
    let mut b = Framed::new(b, IpcCodec::new());
    let writer = tokio::spawn(async move {
        for msg in common::samples() {
            a.send(&msg).await.unwrap();
        }
        a
    });
    for msg in common::samples() {
        assert_eq!(b.next().await.unwrap().unwrap(), msg);
    }
    drop(writer.await.unwrap());
    assert!(b.next().await.is_none());
}

fn numbered(i: u64) -> Message {
    if i % 3 == 0 {
        Message::Broadcast(Broadcast {
            nsp: "/".into(),
            target: Target::default(),
            ack: None,
            offset: Some(i),
            frames: vec![Frame::Text(Bytes::from(format!("42[\"n\",{i}]")))],
        })
    } else {
        Message::Stats { connections: i }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_each_way_arrive_in_order() {
    const N: u64 = 10_000;
    let (a, b) = connected();
    let (mut ra, sa) = a.into_split();
    let (mut rb, sb) = b.into_split();
    let send_a = tokio::spawn(async move {
        for i in 0..N {
            sa.send(numbered(i)).unwrap();
            if i % 1000 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let send_b = tokio::spawn(async move {
        for i in 0..N {
            sb.send(numbered(N + i)).unwrap();
        }
    });
    let recv_b = tokio::spawn(async move {
        for i in 0..N {
            assert_eq!(rb.next().await.unwrap().unwrap(), numbered(i));
        }
        // The sender is gone: EOF follows.
        assert!(rb.next().await.is_none());
    });
    for i in 0..N {
        let got = timeout(LIMIT, ra.next()).await.unwrap().unwrap().unwrap();
        assert_eq!(got, numbered(N + i));
    }
    assert!(timeout(LIMIT, ra.next()).await.unwrap().is_none());
    send_a.await.unwrap();
    send_b.await.unwrap();
    timeout(LIMIT, recv_b).await.unwrap().unwrap();
}

#[tokio::test]
async fn eof_when_the_peer_connection_drops() {
    let (a, mut b) = connected();
    a.sender().send(Message::Ready).unwrap();
    drop(a);
    assert_eq!(next(&mut b).await.unwrap().unwrap(), Message::Ready);
    assert!(next(&mut b).await.is_none());
}

#[tokio::test]
async fn eof_when_the_peer_socket_closes() {
    let (a, b) = pair().unwrap();
    let mut b = IpcConnection::new(b);
    drop(a);
    assert!(next(&mut b).await.is_none());
}

#[tokio::test]
async fn no_eof_while_a_sender_clone_lives() {
    let (a, mut b) = connected();
    let keep = a.sender();
    drop(a);
    assert!(timeout(Duration::from_millis(100), b.next()).await.is_err());
    keep.send(Message::Heartbeat).unwrap();
    assert_eq!(next(&mut b).await.unwrap().unwrap(), Message::Heartbeat);
    drop(keep);
    assert!(next(&mut b).await.is_none());
}

#[tokio::test]
async fn oversized_prefix_ends_the_reader_with_an_error() {
    let (mut a, b) = pair().unwrap();
    let mut b = IpcConnection::with_max_frame_length(b, 1024);
    let mut ok = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut IpcCodec::new(), &Message::Ready, &mut ok).unwrap();
    a.write_all(&ok).await.unwrap();
    a.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    a.write_all(&[0; 64]).await.unwrap();
    assert_eq!(next(&mut b).await.unwrap().unwrap(), Message::Ready);
    let err = next(&mut b).await.unwrap().unwrap_err();
    assert!(
        matches!(err, CodecError::TooLarge { max: 1024, .. }),
        "{err:?}"
    );
    assert!(next(&mut b).await.is_none());
}

#[tokio::test]
async fn malformed_frame_ends_the_reader_with_an_error() {
    let (mut a, b) = pair().unwrap();
    let mut b = IpcConnection::new(b);
    a.write_all(&[0, 0, 0, 2, 250, 0]).await.unwrap();
    assert!(matches!(
        next(&mut b).await.unwrap(),
        Err(CodecError::UnknownTag(250))
    ));
    assert!(next(&mut b).await.is_none());
}

#[tokio::test]
async fn oversized_message_is_refused_at_send() {
    let (a, mut b) = pair()
        .map(|(a, b)| {
            (
                IpcConnection::with_max_frame_length(a, 100),
                IpcConnection::new(b),
            )
        })
        .unwrap();
    let big = Message::Broadcast(Broadcast {
        nsp: "/".into(),
        target: Target::default(),
        ack: None,
        offset: None,
        frames: vec![Frame::Binary(Bytes::from(vec![0; 200]))],
    });
    let err = a.sender().send(big).unwrap_err();
    assert!(
        matches!(err, SendError::Encode(CodecError::TooLarge { .. })),
        "{err:?}"
    );
    // The connection still works.
    a.sender().send(Message::Ready).unwrap();
    assert_eq!(next(&mut b).await.unwrap().unwrap(), Message::Ready);
}

#[tokio::test]
async fn frames_are_relayed_without_reencoding() {
    // worker1 -> primary -> worker2, as the primary's relay does.
    let (w1, p1) = connected();
    let (p2, mut w2) = connected();
    let (mut from_w1, _) = p1.into_split();
    let to_w2 = p2.sender();
    let big = Message::Broadcast(Broadcast {
        nsp: "/".into(),
        target: Target::default(),
        ack: Some((1, 2, 3)),
        offset: None,
        frames: vec![
            Frame::Text(Bytes::from("451-[\"x\",{\"_placeholder\":true,\"num\":0}]")),
            Frame::Binary(Bytes::from(vec![7; 100_000])),
        ],
    });
    for msg in common::samples().into_iter().chain([big]) {
        w1.sender().send(msg.clone()).unwrap();
        let (got, frame) = timeout(LIMIT, from_w1.next_frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
        to_w2.send_frame(frame).unwrap();
        assert_eq!(next(&mut w2).await.unwrap().unwrap(), msg);
    }
}

#[tokio::test]
async fn queued_bytes_drain_to_zero() {
    let (a, mut b) = connected();
    let s = a.sender();
    for i in 0..100 {
        s.send(Message::Stats { connections: i }).unwrap();
    }
    for _ in 0..100 {
        next(&mut b).await.unwrap().unwrap();
    }
    timeout(LIMIT, async {
        while s.queued_bytes() != 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn sends_fail_once_the_peer_is_gone() {
    let (a, b) = pair().unwrap();
    let a = IpcConnection::new(a);
    drop(b);
    let s = a.sender();
    let payload = Message::Broadcast(Broadcast {
        nsp: "/".into(),
        target: Target::default(),
        ack: None,
        offset: None,
        frames: vec![Frame::Binary(Bytes::from(vec![1; 4096]))],
    });
    timeout(LIMIT, async {
        while s.send(payload.clone()).is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .unwrap();
    assert!(s.is_closed());
    assert!(matches!(s.send(Message::Ready), Err(SendError::Closed)));
    timeout(LIMIT, s.closed()).await.unwrap();
}

/// Once `send` returns with nothing queued, the frame is in the kernel: a worker
/// killed right after handing a broadcast over (and acking its client) must not
/// lose it. No `.await` here, so the writer task never runs.
#[tokio::test]
async fn a_frame_is_in_the_socket_when_send_returns() {
    use std::io::Read;
    let (a, b) = pair().unwrap();
    let a = IpcConnection::new(a);
    let mut b = b.into_std().unwrap();
    b.set_nonblocking(false).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    a.sender().send(numbered(1)).unwrap();
    let mut buf = [0u8; 256];
    let n = b
        .read(&mut buf)
        .expect("the frame was written before send returned");
    assert!(n > 0);
    assert_eq!(a.sender().queued_bytes(), 0);
}

/// A peer that does not read fills the socket: the rest of a frame written in
/// part, and everything after it, goes through the writer task, in order.
#[tokio::test]
async fn frames_keep_their_order_when_the_socket_is_full() {
    let (a, mut b) = connected();
    let sender = a.sender();
    let big = |i: u64| {
        Message::Broadcast(Broadcast {
            nsp: "/".into(),
            target: Target::default(),
            ack: None,
            offset: Some(i),
            frames: vec![Frame::Text(Bytes::from(format!(
                "42[\"n\",{i},\"{}\"]",
                "x".repeat(3000)
            )))],
        })
    };
    // About 6 MB, far over a Unix socket's buffer, sent before anything is read.
    for i in 0..2000 {
        sender.send(big(i)).unwrap();
        if i % 7 == 0 {
            sender.send(numbered(i)).unwrap();
        }
    }
    assert!(sender.queued_bytes() > 0, "the socket filled up");
    for i in 0..2000 {
        assert_eq!(next(&mut b).await.unwrap().unwrap(), big(i));
        if i % 7 == 0 {
            assert_eq!(next(&mut b).await.unwrap().unwrap(), numbered(i));
        }
    }
}

/// A peer that stops reading: once the backlog reaches the limit, sends fail with
/// `Backlog` (so memory stays bounded) and keep failing (no message after a gap),
/// while everything accepted before still arrives, complete and in order.
#[tokio::test]
async fn backlog_is_bounded_when_the_peer_stops_reading() {
    const MAX_QUEUED: usize = 1 << 20;
    let (a, b) = pair().unwrap();
    let a = IpcConnection::with_limits(a, rsio_ipc::DEFAULT_MAX_FRAME_LENGTH, MAX_QUEUED);
    let mut b = IpcConnection::new(b);
    let sender = a.sender();
    let big = |i: u64| {
        Message::Broadcast(Broadcast {
            nsp: "/".into(),
            target: Target::default(),
            ack: None,
            offset: Some(i),
            frames: vec![Frame::Binary(Bytes::from(vec![7u8; 64 * 1024]))],
        })
    };
    // Far more than the socket buffer and the limit together: 64 MiB.
    let mut accepted = 0u64;
    let mut refused = 0;
    for i in 0..1024u64 {
        match sender.send(big(i)) {
            Ok(()) => {
                assert_eq!(refused, 0, "message {i} accepted after a refused one");
                accepted += 1;
            }
            Err(SendError::Backlog { limit }) => {
                assert_eq!(limit, MAX_QUEUED);
                refused += 1;
            }
            Err(e) => panic!("send {i}: {e}"),
        }
        // under the limit plus one frame
        assert!(
            sender.queued_bytes() < MAX_QUEUED + 70 * 1024,
            "backlog {}",
            sender.queued_bytes()
        );
    }
    assert!(refused > 0, "no send refused: the backlog is unbounded");
    assert!(matches!(
        sender.send(Message::Heartbeat),
        Err(SendError::Backlog { .. })
    ));
    // What was accepted arrives, in order.
    for i in 0..accepted {
        match next(&mut b).await {
            Some(Ok(Message::Broadcast(got))) => assert_eq!(got.offset, Some(i)),
            other => panic!("message {i}: {other:?}"),
        }
    }
}

/// The event masks of every epoll registration in this process of the socket
/// whose inode is `ino` (from /proc/self/fdinfo: `tfd: .. events: <hex> .. ino:<hex>`).
fn epoll_masks(ino: u64) -> Vec<u32> {
    let mut masks = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fdinfo").unwrap().flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in info.lines().filter(|l| l.starts_with("tfd:")) {
            let field = |name: &str| {
                let mut words = line.split_whitespace();
                words.find(|w| w.starts_with(name)).map(|w| {
                    let v = w.strip_prefix(name).unwrap();
                    if v.is_empty() {
                        words.next().unwrap().to_string()
                    } else {
                        v.to_string()
                    }
                })
            };
            let (Some(events), Some(target)) = (field("events:"), field("ino:")) else {
                continue;
            };
            if u64::from_str_radix(&target, 16) == Ok(ino) {
                masks.push(u32::from_str_radix(&events, 16).unwrap());
            }
        }
    }
    masks
}

/// A peer's read of an AF_UNIX stream socket wakes every registration of it for
/// writing: the socket is polled for writing only while the writer waits.
#[tokio::test(flavor = "current_thread")]
async fn the_socket_is_polled_for_writing_only_while_a_write_waits() {
    use std::os::fd::AsRawFd;
    const EPOLLOUT: u32 = 0x4;
    let (a, b) = pair().unwrap();
    let ino = std::fs::metadata(format!("/proc/self/fd/{}", a.as_raw_fd()))
        .unwrap()
        .ino();
    let (_reader, sender) = IpcConnection::new(a).into_split();
    let mut peer = IpcConnection::new(b);
    sender.send(numbered(0)).unwrap();
    assert_eq!(next(&mut peer).await.unwrap().unwrap(), numbered(0));
    let masks = epoll_masks(ino);
    assert!(!masks.is_empty(), "the socket is registered");
    assert!(
        masks.iter().all(|m| m & EPOLLOUT == 0),
        "not polled for writing: {masks:x?}"
    );
    // The peer stops reading: the writer task waits for room.
    let payload = Message::Broadcast(Broadcast {
        nsp: "/".into(),
        target: Target::default(),
        ack: None,
        offset: None,
        frames: vec![Frame::Binary(Bytes::from(vec![7u8; 64 * 1024]))],
    });
    for _ in 0..64 {
        sender.send(payload.clone()).unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(sender.queued_bytes() > 0, "the socket is full");
    assert!(
        epoll_masks(ino).iter().any(|m| m & EPOLLOUT != 0),
        "polled for writing while a write waits"
    );
    for _ in 0..64 {
        assert_eq!(next(&mut peer).await.unwrap().unwrap(), payload);
    }
    timeout(LIMIT, async {
        while sender.queued_bytes() > 0 || epoll_masks(ino).iter().any(|m| m & EPOLLOUT != 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the writability registration goes once the backlog is written");
}
