//! One Engine.IO session: its outgoing queue, transport state and close signal.
//!
//! Both transports drain the same queue, so packets queued while a client
//! upgrades from polling to WebSocket leave exactly once and in order: whatever a
//! polling GET took before the switch, the WebSocket writer sends the rest.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, OnceLock,
    },
    time::SystemTime,
};

use tokio::sync::Notify;
use tracing::warn;

use super::{deflate::SharedDeflate, headers::RequestHeaders, packet::Frame, sid::Sid};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
/// The transport a session uses now.
pub enum TransportKind {
    /// HTTP long-polling.
    Polling,
    /// WebSocket.
    WebSocket,
}

impl TransportKind {
    /// Node's name: `polling` or `websocket`.
    pub fn as_str(&self) -> &'static str {
        match self {
            TransportKind::Polling => "polling",
            TransportKind::WebSocket => "websocket",
        }
    }
}

/// The Engine.IO protocol revision a session speaks (Node's `socket.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Engine.IO v4, the current protocol.
    V4,
    /// Engine.IO v3 (Socket.IO v2 clients): the client pings, polling payloads
    /// are length-prefixed. `binary`: the client takes binary payloads and
    /// frames (it did not ask for `b64=1`). `jsonp`: the session polls with
    /// JSONP (`j=<n>` on its handshake), answered as `___eio[<n>](…);`.
    V3 {
        /// The client takes binary payloads and frames.
        binary: bool,
        /// The JSONP callback index, for a JSONP session.
        jsonp: Option<u32>,
    },
}

/// Why a session ended, with Node's reason strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed the connection or sent a `close` packet.
    TransportClose,
    /// The transport failed: a broken connection, an overlapping poll, a frame over the limit.
    TransportError,
    /// The client answered no ping in time.
    PingTimeout,
    /// The client sent what is not Engine.IO.
    ParseError,
    /// The server closed the session.
    ForcedClose,
    /// The client read too slowly: its queue would have passed
    /// [`EngineConfig::max_send_queue_bytes`](super::EngineConfig::max_send_queue_bytes).
    SendQueueFull,
}

impl CloseReason {
    /// Node's reason string.
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::TransportClose => "transport close",
            CloseReason::TransportError => "transport error",
            CloseReason::PingTimeout => "ping timeout",
            CloseReason::ParseError => "parse error",
            CloseReason::ForcedClose => "forced close",
            CloseReason::SendQueueFull => "send queue full",
        }
    }
}

/// Where an upgrade from polling to WebSocket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Upgrade {
    None,
    /// A WebSocket for this sid is open and waiting for `2probe`.
    Claimed,
    /// `3probe` was sent: polling GETs are answered with `noop`.
    Probing,
    Done,
}

/// The connection's first request, kept for the upper layer; shared (`Arc`)
/// by the session and every Socket.IO socket of the connection.
#[derive(Debug, Clone)]
pub struct HandshakeRequest {
    /// The handshake request's headers.
    pub headers: RequestHeaders,
    /// The request target: path and query (`/socket.io/?EIO=4&transport=polling`).
    pub url: Box<str>,
    /// The client's address: the TCP peer, or, with `trust_proxy`, the address
    /// the proxy names in `X-Forwarded-For` (port 0 when it names none).
    pub remote_addr: Option<SocketAddr>,
    /// The client used TLS: only a trusted proxy's `X-Forwarded-Proto: https`
    /// says so (rsio terminates no TLS itself).
    pub secure: bool,
    /// When the handshake came.
    pub issued: SystemTime,
}

/// Whether the transport may compress a queued frame: a packet's `compress`
/// flag (Node's `socket.compress(false)`).
#[derive(Debug, Clone, Default)]
pub enum Compress {
    /// Compressed when the transport compresses (permessage-deflate, polling's
    /// `httpCompression`) and the frame is large enough.
    #[default]
    Yes,
    /// Never compressed.
    No,
    /// As `Yes`, with the compressed form shared by every recipient of a broadcast.
    Shared(Arc<SharedDeflate>),
}

impl Compress {
    /// `Yes` or `No`.
    pub fn from_flag(compress: bool) -> Compress {
        if compress {
            Compress::Yes
        } else {
            Compress::No
        }
    }

    /// Whether the frame may be compressed at all.
    pub fn allowed(&self) -> bool {
        !matches!(self, Compress::No)
    }
}

/// The [`Compress`] flag of each frame of one broadcast, the same for all its
/// recipients. Allocates only for frames large enough that some engine of this
/// process may compress them (never when permessage-deflate is off).
#[derive(Debug)]
pub struct BroadcastCompress {
    shared: Option<Box<[Compress]>>,
    compress: bool,
}

impl BroadcastCompress {
    /// The flags for `frames`; `compress` is the broadcast's `compress` flag.
    pub fn new(frames: &[Frame], compress: bool) -> BroadcastCompress {
        let may = |f: &Frame| super::deflate::may_compress(f.len());
        let shared = (compress && frames.iter().any(may)).then(|| {
            frames
                .iter()
                .map(|f| {
                    if may(f) {
                        Compress::Shared(Arc::default())
                    } else {
                        Compress::Yes
                    }
                })
                .collect()
        });
        BroadcastCompress { shared, compress }
    }

    /// The flag of frame `index`.
    pub fn get(&self, index: usize) -> Compress {
        match self.shared.as_deref().and_then(|s| s.get(index)) {
            Some(c) => c.clone(),
            None => Compress::from_flag(self.compress),
        }
    }
}

/// A frame in a session's queue and whether it may be compressed.
#[derive(Debug, Clone)]
pub struct Queued {
    /// The frame, shared with the other recipients of a broadcast.
    pub frame: Frame,
    /// Whether the transport may compress it.
    pub compress: Compress,
}

impl From<Frame> for Queued {
    fn from(frame: Frame) -> Queued {
        Queued {
            frame,
            compress: Compress::Yes,
        }
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub transport: TransportKind,
    pub upgrade: Upgrade,
    pub queue: VecDeque<Queued>,
    /// Bytes in `queue`.
    pub queued_bytes: usize,
    pub get_pending: bool,
    pub post_pending: bool,
    pub awaiting_pong: bool,
    /// The server asked to close: transports deliver the queue, then end the session.
    pub closing: bool,
}

impl State {
    pub(crate) fn push<F: Into<Queued>>(&mut self, frames: impl IntoIterator<Item = F>) {
        for frame in frames {
            let queued = frame.into();
            let len = queued.frame.len();
            crate::metrics::add(crate::metrics::counter::PACKETS_SENT, 1);
            crate::metrics::add(crate::metrics::counter::BYTES_SENT, len as u64);
            self.queued_bytes += len;
            self.queue.push_back(queued);
        }
    }

    /// Takes everything queued, for the transport to write.
    pub(crate) fn take(&mut self) -> VecDeque<Queued> {
        self.queued_bytes = 0;
        std::mem::take(&mut self.queue)
    }
}

/// An Engine.IO session, shared by its transports, its heartbeat and the upper layer.
pub struct Session<D> {
    sid: Sid,
    protocol: Protocol,
    request: Arc<HandshakeRequest>,
    state: Mutex<State>,
    max_queued_bytes: usize,
    /// Something for the active transport to do (queued frames, upgrade progress, closing).
    pub(crate) wake: Notify,
    /// For a polling session's heartbeat task: a pong came, or the server
    /// started closing (see `State::awaiting_pong` and `State::closing`).
    pub(crate) beat: Notify,
    /// Signalled (to every waiter) once the session ends; see [`Session::closed`].
    closed: Notify,
    is_closed: AtomicBool,
    close_reason: OnceLock<CloseReason>,
    /// The upper layer's per-connection state.
    pub data: D,
}

impl<D> std::fmt::Debug for Session<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("sid", &self.sid)
            .finish_non_exhaustive()
    }
}

impl<D> Session<D> {
    pub(crate) fn new(
        sid: Sid,
        protocol: Protocol,
        transport: TransportKind,
        request: Arc<HandshakeRequest>,
        max_queued_bytes: usize,
        data: D,
    ) -> Session<D> {
        Session {
            sid,
            protocol,
            request,
            max_queued_bytes,
            state: Mutex::new(State {
                transport,
                upgrade: Upgrade::None,
                queue: VecDeque::new(),
                queued_bytes: 0,
                get_pending: false,
                post_pending: false,
                // A v3 session always waits for the client's next ping.
                awaiting_pong: protocol != Protocol::V4,
                closing: false,
            }),
            wake: Notify::new(),
            beat: Notify::new(),
            closed: Notify::new(),
            is_closed: AtomicBool::new(false),
            close_reason: OnceLock::new(),
            data,
        }
    }

    /// The session id.
    pub fn sid(&self) -> Sid {
        self.sid
    }

    /// The protocol revision the client speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether the client speaks Engine.IO v3 (a Socket.IO v2 client).
    pub fn is_v3(&self) -> bool {
        self.protocol != Protocol::V4
    }

    /// The handshake request.
    pub fn request(&self) -> &Arc<HandshakeRequest> {
        &self.request
    }

    /// The transport in use now.
    pub fn transport(&self) -> TransportKind {
        self.lock().transport
    }

    /// Whether the session has ended.
    pub fn is_closed(&self) -> bool {
        self.is_closed.load(Ordering::Acquire)
    }

    /// The reason the session ended, once it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.get().copied()
    }

    /// Queues a frame for the client. Returns `false` (and drops it) once the
    /// session is closing or closed.
    pub fn send(&self, frame: Frame) -> bool {
        self.send_all(std::iter::once(frame))
    }

    /// Queues several frames at once (a packet and its binary attachments).
    pub fn send_all(&self, frames: impl IntoIterator<Item = Frame>) -> bool {
        self.send_queued(frames)
    }

    /// As [`Session::send_all`], each frame with its [`Compress`] flag.
    pub fn send_queued<F: Into<Queued>>(&self, frames: impl IntoIterator<Item = F>) -> bool {
        {
            let mut st = self.lock();
            if st.closing || self.is_closed() {
                return false;
            }
            st.push(frames);
            if st.queued_bytes > self.max_queued_bytes {
                let queued = st.queued_bytes;
                drop(st);
                warn!(target: "engine", sid = %self.sid, queued, limit = self.max_queued_bytes,
                    "client reads too slowly: send queue full, disconnecting");
                self.terminate(CloseReason::SendQueueFull);
                return false;
            }
        }
        self.wake.notify_one();
        true
    }

    /// Queues frames only if the transport can write them right away (nothing
    /// queued, and a WebSocket or a waiting GET); otherwise drops them. For
    /// `volatile` packets.
    pub fn send_volatile<F: Into<Queued>>(&self, frames: impl IntoIterator<Item = F>) -> bool {
        {
            let mut st = self.lock();
            let writable =
                st.queue.is_empty() && (st.transport == TransportKind::WebSocket || st.get_pending);
            if st.closing || self.is_closed() || !writable {
                crate::metrics::add(crate::metrics::counter::VOLATILE_DROPS, 1);
                return false;
            }
            st.push(frames);
        }
        self.wake.notify_one();
        true
    }

    /// Closes the session at once for `reason`, dropping what is queued.
    pub fn abort(&self, reason: CloseReason) {
        self.terminate(reason);
    }

    /// Number of frames waiting for the transport.
    pub fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Closes the session from the server side: what is already queued is still
    /// delivered, then the transport is closed ("forced close").
    pub fn close(&self) {
        {
            let mut st = self.lock();
            if st.closing || self.is_closed() {
                return;
            }
            // A polling client between two GETs gets the `close` packet on its next
            // GET (within `close_timeout`), so it sees a clean close, as with Node.
            st.closing = true;
        }
        self.beat.notify_one();
        self.wake.notify_one();
    }

    /// Ends the session at once; the first reason wins.
    pub(crate) fn terminate(&self, reason: CloseReason) {
        let _ = self.close_reason.set(reason);
        if !self.is_closed.swap(true, Ordering::AcqRel) {
            self.closed.notify_waiters();
        }
        self.wake.notify_one();
    }

    /// Completes once the session has ended (at once if it already has).
    pub(crate) async fn closed(&self) {
        let notified = self.closed.notified();
        tokio::pin!(notified);
        // Registered before the check, so an end in between is not missed.
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a pong; only the one answering our last ping counts.
    pub(crate) fn on_pong(&self) {
        let mut st = self.lock();
        if st.awaiting_pong {
            st.awaiting_pong = false;
            drop(st);
            self.beat.notify_one();
        }
    }

    /// A v3 client's ping: answers `3` and tells the heartbeat, which then
    /// waits for the next one (`awaiting_pong` is set again there).
    pub(crate) fn on_client_ping(&self) {
        {
            let mut st = self.lock();
            if st.closing || self.is_closed() {
                return;
            }
            st.awaiting_pong = false;
            st.push([Frame::pong()]);
        }
        self.beat.notify_one();
        self.wake.notify_one();
    }

    /// Queues a ping and marks the session as waiting for its pong.
    pub(crate) fn send_ping(&self) {
        {
            let mut st = self.lock();
            st.awaiting_pong = true;
            st.push([Frame::ping()]);
        }
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(transport: TransportKind) -> Session<()> {
        bounded_session(transport, usize::MAX)
    }

    fn bounded_session(transport: TransportKind, max_queued_bytes: usize) -> Session<()> {
        Session::new(
            Sid::random(),
            Protocol::V4,
            transport,
            Arc::new(HandshakeRequest {
                headers: RequestHeaders::default(),
                url: "/".into(),
                remote_addr: None,
                secure: false,
                issued: SystemTime::now(),
            }),
            max_queued_bytes,
            (),
        )
    }

    #[test]
    fn queues_in_order_until_closing() {
        let s = session(TransportKind::WebSocket);
        assert!(s.send(Frame::message("a")));
        assert!(s.send_all([Frame::message("b"), Frame::message("c")]));
        assert_eq!(s.queued(), 3);
        s.close();
        assert!(!s.is_closed(), "a websocket session flushes before closing");
        assert!(!s.send(Frame::message("d")));
        let q: Vec<Frame> = s.lock().take().into_iter().map(|q| q.frame).collect();
        assert_eq!(
            q,
            vec![
                Frame::message("a"),
                Frame::message("b"),
                Frame::message("c")
            ]
        );
    }

    #[test]
    fn idle_polling_session_waits_for_its_last_get() {
        let s = session(TransportKind::Polling);
        s.close();
        assert!(!s.is_closed(), "the next GET delivers the close packet");
        assert!(s.lock().closing);
        assert!(!s.send(Frame::message("late")));
    }

    #[test]
    fn first_close_reason_wins() {
        let s = session(TransportKind::Polling);
        s.terminate(CloseReason::PingTimeout);
        s.terminate(CloseReason::TransportClose);
        assert_eq!(s.close_reason(), Some(CloseReason::PingTimeout));
        assert!(!s.send(Frame::message("late")));
    }

    #[tokio::test]
    async fn closed_completes_for_waiters_before_and_after_the_end() {
        let s = Arc::new(session(TransportKind::WebSocket));
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.closed().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        s.terminate(CloseReason::TransportClose);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("a waiter registered before the end is woken")
            .unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), s.closed())
            .await
            .expect("after the end, closed() completes at once");
    }

    #[test]
    fn only_awaited_pongs_count() {
        let s = session(TransportKind::Polling);
        s.on_pong();
        assert!(!s.lock().awaiting_pong);
        s.send_ping();
        assert!(s.lock().awaiting_pong);
        assert_eq!(
            s.lock().queue.back().map(|q| &q.frame),
            Some(&Frame::ping())
        );
        s.on_pong();
        assert!(!s.lock().awaiting_pong);
    }

    #[test]
    fn volatile_is_dropped_first_then_a_slow_client_is_disconnected() {
        // "4" + 9 bytes = 10 bytes per message; room for three.
        let s = bounded_session(TransportKind::WebSocket, 30);
        assert!(
            s.send_volatile([Frame::message("volatile1")]),
            "writable: sent"
        );
        assert!(
            !s.send_volatile([Frame::message("volatile2")]),
            "something queued: a volatile packet is dropped"
        );
        assert!(s.send(Frame::message("message01")));
        assert!(s.send(Frame::message("message02")));
        assert_eq!(s.lock().queued_bytes, 30);
        assert!(!s.is_closed());
        // the writer takes the queue: the budget is back
        assert_eq!(s.lock().take().len(), 3);
        assert_eq!(s.lock().queued_bytes, 0);
        for _ in 0..3 {
            assert!(s.send(Frame::message("message03")));
        }
        assert!(!s.send(Frame::message("message04")), "over the bound");
        assert!(s.is_closed());
        assert_eq!(s.close_reason(), Some(CloseReason::SendQueueFull));
    }
}
