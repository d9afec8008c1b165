//! The WebSocket transport: direct WebSocket sessions and upgrades from polling.

use std::{
    collections::VecDeque,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll, Waker},
};

use axum::{body::Body, response::Response};
use bytes::Bytes;
use futures_util::{
    task::{waker_ref, ArcWake, AtomicWaker},
    SinkExt, StreamExt,
};
use http::{header, HeaderValue, Method, Request, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::{
    tungstenite::{
        error::{CapacityError, Error as WsError},
        handshake::derive_accept_key,
        protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig},
        Message as WsMessage,
    },
    WebSocketStream,
};
use tracing::debug;

use super::{
    deflate::{DeflateError, DeflateIo},
    error::RequestError,
    heartbeat::Heartbeat,
    packet::{Frame, Packet},
    payload_v3::{decode_binary_message_v3, decode_packet_v3, encode_ws_binary_v3},
    scratch_reader::ScratchReader,
    server::{Engine, EngineHandler, SessionTask},
    session::{CloseReason, Compress, Protocol, Queued, Session, TransportKind, Upgrade},
};

/// The upgraded connection, read through the thread's scratch buffer.
type Io = ScratchReader<TokioIo<hyper::upgrade::Upgraded>>;
type Ws<S = Io> = WebSocketStream<S>;

/// The I/O under tungstenite: plain, or inflating compressed messages. A type
/// rather than a flag, so a connection without deflate has none of its state.
pub(crate) trait WsIo: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    /// Whether permessage-deflate was negotiated.
    const DEFLATE: bool;
}

impl WsIo for Io {
    const DEFLATE: bool = false;
}

impl WsIo for DeflateIo<Io> {
    const DEFLATE: bool = true;
}

pub(crate) fn is_upgrade_request<B>(req: &Request<B>) -> bool {
    req.method() == Method::GET
        && req
            .headers()
            .get(header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// A checked WebSocket handshake: the accept key, the connection's upgrade
/// handle, and the permessage-deflate answer if it was negotiated.
pub(crate) struct Prepared {
    pub accept: String,
    pub on_upgrade: OnUpgrade,
    pub deflate: Option<HeaderValue>,
}

/// Checks the WebSocket handshake headers, negotiates permessage-deflate when
/// `deflate` is on, and takes the connection's upgrade handle.
pub(crate) fn prepare(req: &mut Request<Body>, deflate: bool) -> Result<Prepared, RequestError> {
    let version_ok = req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|_| version_ok)
        .ok_or(RequestError::BadRequest)?;
    let accept = derive_accept_key(key.as_bytes());
    let deflate = deflate
        .then(|| super::deflate::negotiate(req.headers()))
        .flatten();
    Ok(Prepared {
        accept,
        on_upgrade: hyper::upgrade::on(req),
        deflate,
    })
}

pub(crate) fn switching_protocols(accept_key: &str, deflate: Option<HeaderValue>) -> Response {
    let mut res = Response::new(Body::empty());
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = res.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(accept_key) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(v) = deflate {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, v);
    }
    res
}

/// A WebSocket for an existing polling session: the start of an upgrade.
pub(crate) fn upgrade_session<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    session: Arc<Session<H::Data>>,
    mut req: Request<Body>,
) -> Result<Response, RequestError> {
    if !engine.config.allow_upgrades {
        return Err(RequestError::BadRequest);
    }
    let deflate_on = engine.config.per_message_deflate.is_some();
    let Prepared {
        accept,
        on_upgrade,
        deflate,
    } = prepare(&mut req, deflate_on)?;
    {
        let mut st = session.lock();
        if st.transport != TransportKind::Polling || st.upgrade != Upgrade::None {
            // Already upgrading or upgraded: like Node, accept the second WebSocket and
            // close it at once (clients treat a refused handshake as an error to throw).
            drop(st);
            debug!(target: "engine:ws", sid = %session.sid(), "second websocket for the session closed");
            let timeout = engine.config.ping_timeout;
            tokio::spawn(async move {
                if let Ok(upgraded) = on_upgrade.await {
                    let mut ws = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(ws_config(1024)),
                    )
                    .await;
                    let _ = tokio::time::timeout(timeout, ws.close(None)).await;
                }
            });
            // Closed at once: no extension to run on it.
            return Ok(switching_protocols(&accept, None));
        }
        st.upgrade = Upgrade::Claimed;
    }
    spawn_transport(engine.clone(), session, on_upgrade, None, deflate.is_some());
    Ok(switching_protocols(&accept, deflate))
}

/// tungstenite's read buffer, allocated per connection and kept while it is
/// idle (its default is 128 KiB). The socket itself is read through a
/// per-thread buffer (`ScratchReader`), so a small one costs copies, not
/// `recv` calls.
const READ_BUFFER: usize = 512;

fn ws_config(max_message: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(8 * 1024)
        .max_write_buffer_size(max_message.saturating_mul(2).max(64 * 1024))
        .max_message_size(Some(max_message))
        .max_frame_size(Some(max_message))
}

/// Runs the WebSocket of `session`: a new session's own (`beat` is its
/// heartbeat, served by this task), or an upgrade of a polling session
/// (`beat` is `None`: its heartbeat task keeps running).
/// With `deflate`, compressed messages are inflated on the way in and large
/// ones compressed on the way out.
pub(crate) fn spawn_transport<H: EngineHandler>(
    engine: Arc<Engine<H>>,
    session: Arc<Session<H::Data>>,
    on_upgrade: OnUpgrade,
    beat: Option<Heartbeat>,
    deflate: bool,
) {
    // Two task types: a connection without deflate keeps the smaller one.
    if deflate {
        tokio::spawn(transport(engine, session, on_upgrade, beat, |io, max| {
            DeflateIo::new(io, max)
        }));
    } else {
        tokio::spawn(transport(engine, session, on_upgrade, beat, |io, _| io));
    }
}

/// The task of [`spawn_transport`]; `wrap` makes the I/O under tungstenite.
/// An `async move` block, as `run`, so its arguments are kept once.
#[allow(clippy::manual_async_fn)]
fn transport<H: EngineHandler, S: WsIo>(
    engine: Arc<Engine<H>>,
    session: Arc<Session<H::Data>>,
    on_upgrade: OnUpgrade,
    mut beat: Option<Heartbeat>,
    wrap: impl FnOnce(Io, usize) -> S + Send + 'static,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        // Owns the session for this task: see `SessionTask` (its fields are used
        // in place, not through locals, which would cost every connection's task).
        let task = SessionTask::new(engine, session, beat.is_some());
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                debug!(target: "engine:ws", sid = %task.session.sid(), "upgrade failed: {err}");
                if beat.is_none() {
                    task.session.lock().upgrade = Upgrade::None;
                } else {
                    task.session.terminate(CloseReason::TransportError);
                    task.engine.remove(&task.session);
                }
                return;
            }
        };
        let config = ws_config(task.engine.config.max_http_buffer_size);
        // Boxed: its nested futures hold the stream and the config four times
        // over, and in this task's state that space would last the connection.
        let io = wrap(
            ScratchReader::new(TokioIo::new(upgraded)),
            task.engine.config.max_http_buffer_size,
        );
        let mut ws = Box::pin(WebSocketStream::from_raw_socket(
            io,
            Role::Server,
            Some(config),
        ))
        .await;
        if beat.is_none() && !run_probe(&task.engine, &task.session, &mut ws).await {
            task.session.lock().upgrade = Upgrade::None;
            let _ = tokio::time::timeout(task.engine.config.ping_timeout, ws.close(None)).await;
            return;
        }
        // By reference: an async fn keeps its by-value arguments twice (as
        // arguments and as locals), and this task lives as long as the client.
        run(&task.engine, &task.session, &mut ws, &mut beat).await;
    }
}

/// `2probe` → `3probe`, then `5`: returns whether the upgrade completed.
async fn run_probe<H: EngineHandler, S: WsIo>(
    engine: &Engine<H>,
    session: &Session<H::Data>,
    ws: &mut Ws<S>,
) -> bool {
    let deadline = tokio::time::sleep(engine.config.upgrade_timeout);
    tokio::pin!(deadline);
    loop {
        let msg = tokio::select! {
            _ = &mut deadline => {
                debug!(target: "engine:ws", sid = %session.sid(), "upgrade timed out");
                return false;
            }
            _ = session.closed() => return false,
            msg = ws.next() => msg,
        };
        let text = match msg {
            Some(Ok(WsMessage::Text(text))) => text,
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            _ => return false,
        };
        match text.as_str() {
            "2probe" => {
                if ws.send(WsMessage::Text("3probe".into())).await.is_err() {
                    return false;
                }
                session.lock().upgrade = Upgrade::Probing;
                // A pending GET answers `noop` so the client can pause polling.
                session.wake.notify_waiters();
            }
            "5" if session.lock().upgrade == Upgrade::Probing => {
                {
                    let mut st = session.lock();
                    st.transport = TransportKind::WebSocket;
                    st.upgrade = Upgrade::Done;
                }
                session.wake.notify_waiters();
                debug!(target: "engine:ws", sid = %session.sid(), "upgraded");
                return true;
            }
            _ => return false,
        }
    }
}

fn to_ws(frame: Frame, protocol: Protocol) -> WsMessage {
    match (frame, protocol) {
        (Frame::Text(text), _) => WsMessage::Text(text),
        (Frame::Binary(data), Protocol::V4) => WsMessage::Binary(data),
        // v3 binary messages carry the packet type byte in front.
        (Frame::Binary(data), Protocol::V3 { binary, .. }) => {
            match encode_ws_binary_v3(&data, binary) {
                Frame::Text(text) => WsMessage::Text(text),
                Frame::Binary(data) => WsMessage::Binary(data),
            }
        }
    }
}

/// Frames handled in one go before the answers are written.
const READ_AHEAD: usize = 64;

/// Whether the read side was woken since it last had nothing to read.
///
/// The task wakes up for writes too (a broadcast queued a frame); re-polling
/// the whole read path then (tungstenite's buffer, two waker registrations,
/// the I/O readiness) cost about a tenth of a broadcast delivery, for nothing.
/// So the read side is polled with this waker, and only when it fired.
struct ReadReadiness {
    ready: AtomicBool,
    task: AtomicWaker,
}

impl ArcWake for ReadReadiness {
    fn wake_by_ref(arc_self: &Arc<Self>) {
        arc_self.ready.store(true, Ordering::Release);
        arc_self.task.wake();
    }
}

/// The read side of the connection, polled only when it may have something.
struct Reader {
    readiness: Arc<ReadReadiness>,
}

impl Reader {
    fn new() -> Reader {
        Reader {
            readiness: Arc::new(ReadReadiness {
                // Nothing is registered with the socket yet: poll at least once.
                ready: AtomicBool::new(true),
                task: AtomicWaker::new(),
            }),
        }
    }

    /// The next message if one can be read now; `Pending` leaves the read
    /// side registered to wake this reader (and, if given, the task).
    fn poll_next<S: WsIo>(
        &self,
        ws: &mut Ws<S>,
        task: Option<&Waker>,
    ) -> Poll<Option<Result<WsMessage, WsError>>> {
        if let Some(task) = task {
            self.readiness.task.register(task);
        }
        if !self.readiness.ready.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = waker_ref(&self.readiness);
        let polled = ws.poll_next_unpin(&mut Context::from_waker(&waker));
        if polled.is_ready() {
            // More may be buffered: look again next time.
            self.readiness.ready.store(true, Ordering::Release);
        }
        polled
    }
}

fn on_message<H: EngineHandler>(
    engine: &Engine<H>,
    session: &Arc<Session<H::Data>>,
    msg: Option<Result<WsMessage, WsError>>,
    close_code: &mut Option<CloseCode>,
) {
    let decoded = match msg {
        Some(Ok(WsMessage::Text(text))) if session.is_v3() => decode_packet_v3(Bytes::from(text)),
        Some(Ok(WsMessage::Text(text))) => Packet::decode_text(Bytes::from(text)),
        Some(Ok(WsMessage::Binary(data))) if session.is_v3() => decode_binary_message_v3(data),
        Some(Ok(WsMessage::Binary(data))) => Ok(Packet::Binary(data)),
        other => return on_control(session, other, close_code),
    };
    match decoded {
        Ok(packet) => engine.on_packet(session, packet),
        Err(err) => {
            debug!(target: "engine:ws", sid = %session.sid(), "invalid packet: {err}");
            session.terminate(CloseReason::ParseError);
        }
    }
}

/// Everything but a data message: control frames, the end of the stream, errors.
fn on_control<D>(
    session: &Session<D>,
    msg: Option<Result<WsMessage, WsError>>,
    close_code: &mut Option<CloseCode>,
) {
    match msg {
        // Data messages are `on_message`'s; never passed here.
        Some(Ok(WsMessage::Text(_) | WsMessage::Binary(_))) => {}
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_) | WsMessage::Frame(_))) => {}
        Some(Ok(WsMessage::Close(_))) | None => session.terminate(CloseReason::TransportClose),
        Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
            *close_code = Some(CloseCode::Size);
            session.terminate(CloseReason::TransportError);
        }
        Some(Err(WsError::Io(err))) if deflate_error(&err).is_some() => {
            debug!(target: "engine:ws", sid = %session.sid(), "websocket error: {err}");
            *close_code = deflate_error(&err).map(|err| match err {
                DeflateError::TooLarge => CloseCode::Size,
                DeflateError::Invalid => CloseCode::Invalid,
                DeflateError::Protocol => CloseCode::Protocol,
            });
            session.terminate(CloseReason::TransportError);
        }
        Some(Err(err)) => {
            debug!(target: "engine:ws", sid = %session.sid(), "websocket error: {err}");
            match err {
                WsError::Protocol(_) => *close_code = Some(CloseCode::Protocol),
                // RFC 6455 7.4.1: data inconsistent with the message type.
                WsError::Utf8(_) => *close_code = Some(CloseCode::Invalid),
                _ => {}
            }
            session.terminate(CloseReason::TransportError);
        }
    }
}

/// The refusal of a compressed message, if that is what `err` is.
fn deflate_error(err: &std::io::Error) -> Option<DeflateError> {
    err.get_ref()?.downcast_ref::<DeflateError>().copied()
}

/// Sends `frames` (taking them from the front as they go), then flushes.
fn write_frames<H: EngineHandler, S: WsIo>(
    engine: &Engine<H>,
    ws: &mut Ws<S>,
    frames: &mut VecDeque<Queued>,
    protocol: Protocol,
    cx: &mut Context<'_>,
) -> Poll<Result<(), WsError>> {
    loop {
        if frames.is_empty() {
            return ws.poll_flush_unpin(cx);
        }
        ready!(ws.poll_ready_unpin(cx))?;
        if let Some(Queued { frame, compress }) = frames.pop_front() {
            // A v3 binary frame is re-encoded per client: not the shared payload.
            let same_payload =
                matches!((&frame, protocol), (Frame::Text(_), _) | (_, Protocol::V4));
            let msg = to_ws(frame, protocol);
            let msg = match (&engine.config.per_message_deflate, compress) {
                (Some(cfg), Compress::Shared(shared)) if S::DEFLATE && same_payload => {
                    super::deflate::compress_shared(msg, cfg, &shared)
                }
                (Some(cfg), Compress::Yes | Compress::Shared(_)) if S::DEFLATE => {
                    super::deflate::compress(msg, cfg)
                }
                _ => msg,
            };
            ws.start_send_unpin(msg)?;
        }
    }
}

/// Moves packets both ways until the session ends; with `beat`, also pings,
/// and removes the session from the engine at the end.
///
/// An `async move` block rather than an `async fn`: the function's arguments
/// would be kept twice in its state (as arguments and as locals), for the
/// life of the connection.
#[allow(clippy::manual_async_fn)]
fn run<'a, H: EngineHandler, S: WsIo>(
    engine: &'a Engine<H>,
    session: &'a Arc<Session<H::Data>>,
    ws: &'a mut Ws<S>,
    beat: &'a mut Option<Heartbeat>,
) -> impl std::future::Future<Output = ()> + Send + 'a {
    async move {
        let config = &engine.config;
        let mut close_code: Option<CloseCode> = None;
        let reader = Reader::new();
        // Never polled without `beat`: an unpolled `Sleep` is not registered.
        let timer = tokio::time::sleep_until(
            beat.as_ref()
                .map_or_else(tokio::time::Instant::now, |b| b.deadline(config)),
        );
        tokio::pin!(timer);
        loop {
            let (mut frames, closing) = {
                let mut st = session.lock();
                if let Some(beat) = beat.as_mut() {
                    if beat.observe(config, &mut st) {
                        timer.as_mut().reset(beat.deadline(config));
                    }
                }
                (st.take(), st.closing)
            };
            if !frames.is_empty() {
                // Written by hand rather than as an `async` block: it is part of this
                // task's state, which every idle connection keeps (184 bytes as a block).
                let protocol = session.protocol();
                let mut write =
                    std::future::poll_fn(|cx| write_frames(engine, ws, &mut frames, protocol, cx));
                // A client that stops reading blocks the write; the session may end
                // meanwhile (ping timeout, queue bound, server close): stop waiting then.
                let written = loop {
                    tokio::select! {
                        biased;
                        res = &mut write => break res.is_ok(),
                        _ = session.closed() => break false,
                        _ = &mut timer, if beat.is_some() => {
                            let Some(beat) = beat.as_mut() else { break false };
                            if !beat.on_timer(config, session) {
                                break false;
                            }
                            timer.as_mut().reset(beat.deadline(config));
                        }
                    }
                };
                if !written {
                    session.terminate(CloseReason::TransportError);
                    break;
                }
            }
            if closing {
                session.terminate(CloseReason::ForcedClose);
            }
            if session.is_closed() {
                break;
            }
            // `terminate` also signals `wake`, and on a WebSocket session this task is
            // the only one waiting on it: no separate wait on `closed()` here.
            let msg = tokio::select! {
                biased;
                _ = session.wake.notified() => continue,
                _ = &mut timer, if beat.is_some() => {
                    if let Some(beat) = beat.as_mut() {
                        beat.on_timer(config, session);
                        timer.as_mut().reset(beat.deadline(config));
                    }
                    continue;
                }
                msg = std::future::poll_fn(|cx| reader.poll_next(ws, Some(cx.waker()))) => msg,
            };
            on_message(engine, session, msg, &mut close_code);
            // Handle every frame that is already here before writing the answers:
            // one write (and one syscall) for a batch of requests, not one each.
            for _ in 0..READ_AHEAD {
                if session.is_closed() {
                    break;
                }
                match reader.poll_next(ws, None) {
                    Poll::Ready(msg) => on_message(engine, session, msg, &mut close_code),
                    Poll::Pending => break,
                }
            }
        }
        if beat.is_some() {
            engine.remove(session);
        }
        let frame = close_code.map(|code| CloseFrame {
            code,
            reason: "".into(),
        });
        // Best effort: the peer may already be gone. Boxed: kept in this task's
        // state, it would make every idle connection pay for its size.
        let _ = Box::pin(tokio::time::timeout(config.ping_timeout, ws.close(frame))).await;
    }
}
