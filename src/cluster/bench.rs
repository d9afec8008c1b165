//! Measurement support (not a stable API): what the primary spends on one
//! recoverable broadcast with a given number of stored sessions, driven through
//! the real `SessionStore`. Run by `examples/session_expiry_bench.rs` and
//! `scripts/bench --sessions`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use rsio_ipc::{
    Broadcast, EncodedFrame, Frame, Message, Session, Target, DEFAULT_MAX_FRAME_LENGTH,
};

use super::sessions::SessionStore;

/// The cost of one recoverable broadcast in the primary, averaged over a run.
#[derive(Debug, Clone, Copy)]
pub struct BroadcastCost {
    /// CPU time of the measuring thread per broadcast.
    pub cpu: Duration,
    /// Wall-clock time per broadcast.
    pub wall: Duration,
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Stores `stored` sessions of disconnected, recoverable sockets (those of a
/// worker that died, within their recovery window, so none expires during the
/// run), then times `broadcasts`
/// recoverable broadcasts as the primary handles them: the message copied,
/// numbered and logged by the store, and encoded once for every worker.
pub fn recoverable_broadcast_cost(stored: usize, broadcasts: usize) -> BroadcastCost {
    let mut store = SessionStore::new();
    store.enable(Duration::from_secs(120));
    for i in 0..stored {
        store.update(
            0,
            Session {
                nsp: "/".into(),
                pid: format!("pid-{i:016}"),
                id: format!("sid-{i:016}"),
                rooms: vec!["room".into()],
                data: b"{}".to_vec(),
            },
        );
    }
    store.worker_gone(0);
    let message = Broadcast {
        nsp: "/".into(),
        target: Target {
            rooms: vec!["room".into()],
            ..Target::default()
        },
        ack: None,
        offset: Some(0),
        frames: vec![Frame::Text(Bytes::from_static(
            b"42[\"bcast\",\"0123456789abcdef0123456789abcdef\"]",
        ))],
    };
    let (cpu, wall) = (thread_cpu(), Instant::now());
    for _ in 0..broadcasts {
        // The primary's `Message::Broadcast` arm, without the socket writes.
        let mut b = message.clone();
        if !store.sequence(&mut b) {
            b.offset = None;
        }
        let frame = EncodedFrame::encode(&Message::Broadcast(b), DEFAULT_MAX_FRAME_LENGTH);
        std::hint::black_box(frame.ok());
    }
    let n = broadcasts.max(1) as u32;
    BroadcastCost {
        cpu: (thread_cpu() - cpu) / n,
        wall: wall.elapsed() / n,
    }
}
