//! Test-only misbehaving workers, for the primary's checks (tests/cluster_supervision.rs).
//!
//! With `RSIO_INTEROP_FAKE_WORKER=<mode>:<index>:<marker file>` in the cluster's
//! environment, the first process started as worker `<index>` (the one that creates
//! `<marker file>`) does not serve: it speaks `<mode>` on its ipc socket (fd 4), then
//! waits without reading or heartbeating until it is killed or its primary goes. Its
//! restarted successor finds the marker and is a real worker. Without the variable,
//! nothing here runs.
//!
//! Modes: `garbage` (a hello, then a length prefix of 4 GiB), `spoof` (a hello, then an
//! ack in another worker's name), `bad-recipient` (a hello, ready, then a response to
//! a worker that does not exist), `pid0` (a hello claiming pid 0, ready, then silence).

use std::{
    io::Write,
    os::{fd::FromRawFd, unix::net::UnixStream},
    process::ExitCode,
};

use rsio_ipc::{EncodedFrame, EventPayload, Message, PROTOCOL_VERSION};

/// Runs the fake worker if this process is the one the variable names.
pub fn run_if_asked() -> Option<ExitCode> {
    let spec = std::env::var("RSIO_INTEROP_FAKE_WORKER").ok()?;
    let index: u16 = std::env::var("RSIO_WORKER_INDEX").ok()?.parse().ok()?;
    let mut parts = spec.splitn(3, ':');
    let (mode, target, marker) = (parts.next()?, parts.next()?, parts.next()?);
    if target.parse::<u16>().ok()? != index {
        return None;
    }
    // Only the first incarnation misbehaves.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(marker)
        .ok()?;
    // SAFETY: the primary passed our ipc socket on fd 4; nothing else uses it here.
    let mut ipc = unsafe { UnixStream::from_raw_fd(4) };
    let other = if index == 0 { 1 } else { 0 };
    let hello = |pid| Message::Hello {
        version: PROTOCOL_VERSION,
        worker: index,
        pid,
    };
    let mut out = Vec::new();
    let mut push = |m: &Message| {
        let frame = EncodedFrame::encode(m, usize::MAX).expect("encode");
        out.extend_from_slice(frame.as_bytes());
    };
    match mode {
        "garbage" => {
            push(&hello(std::process::id()));
            out.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
        }
        "spoof" => {
            push(&hello(std::process::id()));
            push(&Message::Ready);
            push(&Message::BroadcastAck {
                from: other,
                to: other,
                request: 1,
                payload: EventPayload::default(),
            });
        }
        "bad-recipient" => {
            push(&hello(std::process::id()));
            push(&Message::Ready);
            push(&Message::BroadcastClientCount {
                from: index,
                to: 999,
                request: 1,
                count: 1,
            });
        }
        "pid0" => {
            push(&hello(0));
            push(&Message::Ready);
        }
        _ => {
            eprintln!("fake worker: unknown mode {mode:?}");
            return Some(ExitCode::FAILURE);
        }
    }
    eprintln!("fake worker {index} (pid {}): {mode}", std::process::id());
    let _ = ipc.write_all(&out);
    // Wait, neither heartbeating nor exiting (not even at EOF: only a kill ends it),
    // until killed; PR_SET_PDEATHSIG's SIGTERM ends it with the primary.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
