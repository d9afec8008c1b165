//! The Engine.IO server: request routing, handshakes and the session table.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::SystemTime,
};

use axum::{
    body::Body,
    extract::ConnectInfo,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use tracing::{debug, warn};

use super::{
    config::{EngineConfig, EngineConfigError},
    error::{ErrorCounters, RequestError},
    headers::RequestHeaders,
    packet::{Frame, Packet},
    session::{CloseReason, HandshakeRequest, Protocol, Session, TransportKind},
    sid::Sid,
};

/// A message received from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message; valid UTF-8.
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
}

/// What the layer above Engine.IO (Socket.IO, or an echo server) does with sessions.
///
/// Callbacks run on the transport's task, in the order the client's packets
/// arrived; they must not block.
pub trait EngineHandler: Send + Sync + 'static {
    /// Per-session state of the upper layer, stored inside the [`Session`].
    type Data: Default + Send + Sync + 'static;

    /// A session opened (its `open` packet is sent).
    fn on_open(&self, session: &Arc<Session<Self::Data>>);
    /// A message from the client, in the order they arrived.
    fn on_message(&self, session: &Arc<Session<Self::Data>>, message: Message);
    /// Called once, after the session left the session table.
    fn on_close(&self, session: &Arc<Session<Self::Data>>, reason: CloseReason);
}

pub(crate) struct Query<'a> {
    pub eio: Option<&'a str>,
    pub transport: Option<&'a str>,
    pub sid: Option<&'a str>,
    /// v3: `b64=1` asks for base64 instead of binary payloads and frames.
    pub b64: Option<&'a str>,
    /// v3: JSONP polling, with this callback index.
    pub j: Option<&'a str>,
}

impl<'a> Query<'a> {
    pub(crate) fn parse(query: Option<&'a str>) -> Query<'a> {
        let mut q = Query {
            eio: None,
            transport: None,
            sid: None,
            b64: None,
            j: None,
        };
        for pair in query.unwrap_or("").split('&') {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let slot = match k {
                "EIO" => &mut q.eio,
                "transport" => &mut q.transport,
                "sid" => &mut q.sid,
                "b64" => &mut q.b64,
                "j" => &mut q.j,
                _ => continue,
            };
            // A repeated key is ambiguous (Node sees an array there and refuses it):
            // the empty value is refused as an unknown transport, sid or version.
            *slot = if slot.is_some() { Some("") } else { Some(v) };
        }
        q
    }
}

/// An Engine.IO server: one per mount path, per worker.
pub struct Engine<H: EngineHandler> {
    pub(crate) config: EngineConfig,
    handler: H,
    sessions: Mutex<HashMap<Sid, Arc<Session<H::Data>>>>,
    errors: ErrorCounters,
}

impl<H: EngineHandler> Engine<H> {
    /// An engine serving `config`.
    ///
    /// # Panics
    ///
    /// When `config` is refused by [`EngineConfig::validate`] (a programming
    /// error, like an invalid route in axum); [`Engine::try_new`] returns it.
    pub fn new(config: EngineConfig, handler: H) -> Arc<Self> {
        Engine::try_new(config, handler).unwrap_or_else(|err| panic!("invalid EngineConfig: {err}"))
    }

    /// An engine serving `config`, or why `config` cannot work.
    pub fn try_new(config: EngineConfig, handler: H) -> Result<Arc<Self>, EngineConfigError> {
        config.validate()?;
        if let Some(deflate) = &config.per_message_deflate {
            super::deflate::enable(deflate.threshold);
        }
        Ok(Arc::new(Engine {
            config,
            handler,
            sessions: Mutex::new(HashMap::new()),
            errors: ErrorCounters::default(),
        }))
    }

    /// The options it runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The upper layer's handler.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Live sessions (Node's `engine.clientsCount`).
    pub fn clients_count(&self) -> usize {
        self.table().len()
    }

    /// Rejected requests by Engine.IO error code 0–5.
    pub fn connection_errors(&self) -> [u64; RequestError::COUNT] {
        self.errors.snapshot()
    }

    /// The live session `sid`.
    pub fn session(&self, sid: Sid) -> Option<Arc<Session<H::Data>>> {
        self.table().get(&sid).cloned()
    }

    /// Every live session.
    pub fn sessions(&self) -> Vec<Arc<Session<H::Data>>> {
        self.table().values().cloned().collect()
    }

    fn table(&self) -> MutexGuard<'_, HashMap<Sid, Arc<Session<H::Data>>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves one HTTP request addressed to this engine's path.
    pub async fn handle(self: Arc<Self>, req: Request<Body>) -> Response {
        match self.clone().route(req).await {
            Ok(res) => res,
            Err(err) => {
                self.errors.record(&err);
                debug!(target: "engine", code = err.code(), "request refused: {err}");
                err.into_response()
            }
        }
    }

    async fn route(self: Arc<Self>, req: Request<Body>) -> Result<Response, RequestError> {
        let headers = req.headers();
        let origin = headers.get(header::ORIGIN).map(|v| v.as_bytes());
        let policy = &self.config.allowed_origins;
        // Behind a reverse proxy that rewrites `Host`, its `X-Forwarded-Host` names
        // the page's host. Only a trusted proxy's counts: a page's script, or any
        // non-browser client, can send the header itself (fetch, polling).
        let forwarded_host = || {
            self.config
                .trust_proxy
                .then(|| super::proxy::forwarded_host(headers))
                .flatten()
        };
        if !policy.allows(origin, headers.get(header::HOST).map(|v| v.as_bytes()))
            && !forwarded_host().is_some_and(|host| policy.allows(origin, Some(host)))
        {
            warn!(
                target: "engine",
                origin = ?headers.get(header::ORIGIN),
                host = ?headers.get(header::HOST),
                "request from a foreign origin refused"
            );
            crate::metrics::add(crate::metrics::counter::ORIGIN_REFUSALS, 1);
            return Err(RequestError::Forbidden("Forbidden".into()));
        }
        let query = Query::parse(req.uri().query());
        let transport = match query.transport {
            Some("polling") if self.config.transports.polling => TransportKind::Polling,
            Some("websocket") if self.config.transports.websocket => TransportKind::WebSocket,
            _ => return Err(RequestError::UnknownTransport),
        };
        let is_upgrade = super::websocket::is_upgrade_request(&req);
        if let Some(sid) = query.sid {
            // A closed session stays in the table until its heartbeat removes it;
            // for a new request it is already gone, as in Node.
            let session = Sid::parse(sid)
                .and_then(|sid| self.session(sid))
                .filter(|session| !session.is_closed())
                .ok_or(RequestError::UnknownSid)?;
            return match transport {
                TransportKind::Polling => super::polling::handle(&self, session, req).await,
                TransportKind::WebSocket if is_upgrade => {
                    super::websocket::upgrade_session(&self, session, req)
                }
                TransportKind::WebSocket => Err(RequestError::BadRequest),
            };
        }
        if req.method() != Method::GET {
            return Err(RequestError::BadHandshakeMethod);
        }
        if transport == TransportKind::WebSocket && !is_upgrade {
            return Err(RequestError::BadRequest);
        }
        // As Node: with `allowEIO3`, anything but `EIO=4` (even none) is v3.
        let protocol = match query.eio {
            Some("4") => Protocol::V4,
            _ if self.config.allow_eio3 => {
                let jsonp = match query.j {
                    Some(j) if transport == TransportKind::Polling => {
                        Some(super::jsonp::callback_index(j).ok_or(RequestError::BadRequest)?)
                    }
                    _ => None,
                };
                Protocol::V3 {
                    // A JSONP client cannot take binary payloads.
                    binary: query.b64.is_none_or(str::is_empty) && jsonp.is_none(),
                    jsonp,
                }
            }
            _ => return Err(RequestError::UnsupportedProtocolVersion),
        };
        if let Some(allow) = &self.config.allow_request {
            let (parts, body) = req.into_parts();
            allow(&parts).await.map_err(RequestError::Forbidden)?;
            let req = Request::from_parts(parts, body);
            return self.handshake(protocol, transport, req);
        }
        self.handshake(protocol, transport, req)
    }

    fn handshake(
        self: &Arc<Self>,
        protocol: Protocol,
        transport: TransportKind,
        mut req: Request<Body>,
    ) -> Result<Response, RequestError> {
        let peer = req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        let trusted = self.config.trust_proxy.then_some(req.headers());
        let remote_addr = trusted.and_then(super::proxy::forwarded_for).or(peer);
        let secure = trusted.is_some_and(super::proxy::forwarded_https);
        let request = Arc::new(HandshakeRequest {
            headers: RequestHeaders::new(req.headers()),
            url: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .into(),
            remote_addr,
            secure,
            issued: SystemTime::now(),
        });
        // A WebSocket handshake is answered with 101 before the session exists,
        // so check it can be upgraded first.
        let on_upgrade = match transport {
            TransportKind::WebSocket => Some(super::websocket::prepare(
                &mut req,
                self.config.per_message_deflate.is_some(),
            )?),
            TransportKind::Polling => None,
        };
        let opened = tokio::time::Instant::now();
        let sid = Sid::for_session();
        let session = Arc::new(Session::new(
            sid,
            protocol,
            transport,
            request,
            self.config.max_send_queue_bytes,
            H::Data::default(),
        ));
        self.table().insert(sid, session.clone());
        crate::metrics::add(crate::metrics::counter::CONNECTS, 1);
        debug!(target: "engine", %sid, transport = transport.as_str(), "session opened");

        let open = Frame::text(self.open_packet(sid, transport));
        let mut frames = vec![open];
        if let Some(initial) = &self.config.initial_packet {
            frames.push(Frame::message(initial));
        }
        match on_upgrade {
            Some(prepared) => {
                session.send_all(frames);
                self.handler.on_open(&session);
                let beat = super::heartbeat::Heartbeat::new(&self.config, opened, session.is_v3());
                super::websocket::spawn_transport(
                    self.clone(),
                    session,
                    prepared.on_upgrade,
                    Some(beat),
                    prepared.deflate.is_some(),
                );
                Ok(super::websocket::switching_protocols(
                    &prepared.accept,
                    prepared.deflate,
                ))
            }
            None => {
                tokio::spawn(super::heartbeat::run(self.clone(), session.clone(), opened));
                // The handshake response carries the open packet itself.
                let body = match protocol {
                    Protocol::V4 => super::payload::encode_payload(&frames),
                    // Text frames only: the text format whatever the client supports.
                    Protocol::V3 { jsonp, .. } => {
                        let body = super::payload_v3::encode_payload_v3(&frames, false).body;
                        match jsonp {
                            Some(index) => super::jsonp::wrap(index, &body),
                            None => body,
                        }
                    }
                };
                self.handler.on_open(&session);
                let mut res = super::polling::text_response(StatusCode::OK, body);
                if let Some(cookie) = &self.config.cookie {
                    let mut value = format!("{}={}; Path={}", cookie.name, sid, cookie.path);
                    if cookie.http_only {
                        value.push_str("; HttpOnly");
                    }
                    if let Some(same_site) = &cookie.same_site {
                        value.push_str("; SameSite=");
                        value.push_str(same_site);
                    }
                    if let Ok(v) = value.parse() {
                        res.headers_mut().insert(header::SET_COOKIE, v);
                    }
                }
                Ok(res)
            }
        }
    }

    fn open_packet(&self, sid: Sid, transport: TransportKind) -> String {
        let upgrades = if transport == TransportKind::Polling
            && self.config.allow_upgrades
            && self.config.transports.websocket
        {
            "[\"websocket\"]"
        } else {
            "[]"
        };
        format!(
            "0{{\"sid\":\"{sid}\",\"upgrades\":{upgrades},\"pingInterval\":{},\"pingTimeout\":{},\"maxPayload\":{}}}",
            self.config.ping_interval.as_millis(),
            self.config.ping_timeout.as_millis(),
            self.config.max_http_buffer_size
        )
    }

    /// Handles one packet from a client, whatever its transport.
    pub(crate) fn on_packet(&self, session: &Arc<Session<H::Data>>, packet: Packet) {
        match packet {
            Packet::Message(text) => {
                crate::metrics::packet_received(text.len());
                self.handler.on_message(session, Message::Text(text))
            }
            Packet::Binary(data) => {
                crate::metrics::packet_received(data.len());
                self.handler.on_message(session, Message::Binary(data))
            }
            Packet::Pong(_) if !session.is_v3() => session.on_pong(),
            Packet::Ping(_) if session.is_v3() => session.on_client_ping(),
            Packet::Close => session.terminate(CloseReason::TransportClose),
            Packet::Noop => {}
            // v4 clients never ping (only `2probe` on a probing WebSocket, handled
            // there), v3 clients never pong: Node's "invalid heartbeat direction".
            Packet::Ping(_) | Packet::Pong(_) | Packet::Upgrade | Packet::Open => {
                debug!(target: "engine", sid = %session.sid(), ?packet, "unexpected packet");
                session.terminate(CloseReason::TransportError);
            }
        }
    }

    /// Removes a session that ended and tells the upper layer.
    pub(crate) fn remove(&self, session: &Arc<Session<H::Data>>) {
        let removed = self.table().remove(&session.sid()).is_some();
        if removed {
            let reason = session.close_reason().unwrap_or(CloseReason::ForcedClose);
            debug!(target: "engine", sid = %session.sid(), reason = reason.as_str(), "session closed");
            crate::metrics::disconnected(reason);
            self.handler.on_close(session, reason);
        }
    }
}

/// The session a task serves, with its engine. Dropped (at the end of the
/// task, and also when the task unwinds from a panic or is cancelled) it ends
/// the session and, for the task that owns the session's life, removes it from
/// the session table: no session outlives its task there.
pub(crate) struct SessionTask<H: EngineHandler> {
    pub(crate) engine: Arc<Engine<H>>,
    pub(crate) session: Arc<Session<H::Data>>,
    /// Whether this task removes the session (the heartbeat's task), or only
    /// serves it for a while (an upgrade's WebSocket: ended by a panic only).
    owner: bool,
}

impl<H: EngineHandler> SessionTask<H> {
    pub(crate) fn new(
        engine: Arc<Engine<H>>,
        session: Arc<Session<H::Data>>,
        owner: bool,
    ) -> SessionTask<H> {
        SessionTask {
            engine,
            session,
            owner,
        }
    }
}

impl<H: EngineHandler> Drop for SessionTask<H> {
    fn drop(&mut self) {
        if !self.owner && !std::thread::panicking() {
            return;
        }
        if !self.session.is_closed() {
            warn!(target: "engine", sid = %self.session.sid(), "session task ended abnormally: closing the session");
            self.session.terminate(CloseReason::TransportError);
        }
        if self.owner {
            // A no-op when the task already removed it.
            self.engine.remove(&self.session);
        }
    }
}

/// A handler that does nothing, for the engine's unit tests.
#[cfg(test)]
pub(crate) struct Nop;

#[cfg(test)]
impl EngineHandler for Nop {
    type Data = ();
    fn on_open(&self, _: &Arc<Session<()>>) {}
    fn on_message(&self, _: &Arc<Session<()>>, _: Message) {}
    fn on_close(&self, _: &Arc<Session<()>>, _: CloseReason) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn call(engine: &Arc<Engine<Nop>>, uri: &str) -> (StatusCode, String) {
        let req = Request::get(uri).body(Body::empty()).unwrap();
        let res = engine.clone().handle(req).await;
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// A session that was just closed (its heartbeat has not yet removed it
    /// from the table) is unknown to the next request: the conformance suite's
    /// "closes the session upon cancelled polling request" depends on it.
    #[tokio::test]
    async fn closed_session_is_unknown_before_its_removal() {
        let engine = Engine::new(EngineConfig::default(), Nop);
        let (status, body) = call(&engine, "/engine.io/?EIO=4&transport=polling").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let sid = body.split('"').nth(3).unwrap().to_string();
        let session = engine.session(Sid::parse(&sid).unwrap()).unwrap();
        session.abort(CloseReason::TransportError);
        // no await point between the close and the request: the session is still listed
        assert!(engine.session(session.sid()).is_some());
        let (status, body) = call(
            &engine,
            &format!("/engine.io/?EIO=4&transport=polling&sid={sid}"),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, r#"{"code":1,"message":"Session ID unknown"}"#);
    }

    #[test]
    fn repeated_query_keys_are_refused() {
        let q = Query::parse(Some(
            "EIO=4&transport=polling&t=abc&sid=x&transport=websocket&t=d",
        ));
        assert_eq!(q.eio, Some("4"));
        assert_eq!(q.transport, Some(""), "repeated: matches no transport");
        assert_eq!(q.sid, Some("x"));
        let q = Query::parse(Some("sid=a&EIO=4&sid=a&EIO=4"));
        assert_eq!((q.sid, q.eio, q.transport), (Some(""), Some(""), None));
        let q = Query::parse(None);
        assert!(q.eio.is_none() && q.transport.is_none() && q.sid.is_none());
    }
}
