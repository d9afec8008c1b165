//! HTTP long-polling: a GET waits for queued packets, a POST carries packets in
//! (v4 payloads, or v3 ones for a v3 session).

use std::{
    io::Write,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Body,
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use flate2::{write::GzEncoder, write::ZlibEncoder, Compression};
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tracing::debug;

use super::{
    error::RequestError,
    jsonp,
    packet::Frame,
    payload::{decode_payload, encode_payload},
    payload_v3::{decode_binary_payload_v3, decode_text_payload_v3, encode_payload_v3},
    server::{Engine, EngineHandler},
    session::{CloseReason, Protocol, Session, TransportKind, Upgrade},
};

/// How long a fresh GET waits for an upgrade in progress before answering `noop`
/// (Node re-sends `noop` every 100 ms while a client upgrades).
const PROBE_NOOP_DELAY: Duration = Duration::from_millis(100);

pub(crate) async fn handle<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    session: Arc<Session<H::Data>>,
    req: Request<Body>,
) -> Result<Response, RequestError> {
    match *req.method() {
        Method::GET => get(engine, session, req).await,
        Method::POST => post(engine, session, req).await,
        _ => Err(RequestError::BadRequest),
    }
}

/// Resets the "request in progress" flag when a request ends, and closes the
/// session when the client gave up on it before it completed.
struct InFlight<'a, D> {
    session: &'a Session<D>,
    get: bool,
    completed: bool,
}

/// Why a polling request was not taken.
enum Refused {
    /// The session moved to WebSocket: Node's "transport mismatch".
    Upgraded,
    /// A second GET (or POST) while one is in progress: the session is closed.
    Overlap,
}

impl Refused {
    fn into_result(self) -> Result<Response, RequestError> {
        match self {
            Refused::Upgraded => Err(RequestError::BadRequest),
            Refused::Overlap => Ok(StatusCode::BAD_REQUEST.into_response()),
        }
    }
}

impl<'a, D> InFlight<'a, D> {
    /// Marks a GET (or POST) in progress. A second one at the same time is an
    /// error that closes the session; a polling request for an upgraded session
    /// is refused.
    fn claim(session: &'a Session<D>, get: bool) -> Result<Self, Refused> {
        let mut st = session.lock();
        if st.transport != TransportKind::Polling {
            return Err(Refused::Upgraded);
        }
        let pending = if get {
            &mut st.get_pending
        } else {
            &mut st.post_pending
        };
        if *pending {
            drop(st);
            debug!(target: "engine:polling", sid = %session.sid(), get, "overlapping request");
            session.terminate(CloseReason::TransportError);
            return Err(Refused::Overlap);
        }
        *pending = true;
        Ok(InFlight {
            session,
            get,
            completed: false,
        })
    }
}

impl<D> Drop for InFlight<'_, D> {
    fn drop(&mut self) {
        let mut st = self.session.lock();
        if self.get {
            st.get_pending = false;
        } else {
            st.post_pending = false;
        }
        drop(st);
        if !self.completed {
            debug!(target: "engine:polling", sid = %self.session.sid(), "request closed prematurely");
            self.session.terminate(CloseReason::TransportError);
        }
    }
}

/// Ends the session if handling its packets unwinds (a panic in the layer
/// above): its heartbeat task then removes it from the engine, instead of a
/// session that nobody serves staying in the table until its ping timeout.
struct EndOnUnwind<'a, D>(&'a Session<D>);

impl<D> Drop for EndOnUnwind<'_, D> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.terminate(CloseReason::TransportError);
        }
    }
}

async fn get<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    session: Arc<Session<H::Data>>,
    req: Request<Body>,
) -> Result<Response, RequestError> {
    let mut in_flight = match InFlight::claim(&session, true) {
        Ok(f) => f,
        Err(refused) => return refused.into_result(),
    };
    let mut probe_deadline: Option<Instant> = None;
    let mut first = true;
    let mut compress = true;
    let frames: Vec<Frame> = loop {
        let wake = session.wake.notified();
        {
            let mut st = session.lock();
            if session.is_closed() {
                // The client's own `close` is answered with `noop`, a server close with `close`.
                break if session.close_reason() == Some(CloseReason::TransportClose) {
                    vec![Frame::noop()]
                } else {
                    vec![Frame::close()]
                };
            }
            if st.transport != TransportKind::Polling {
                // The upgrade finished while this GET waited: the WebSocket writer owns
                // the queue now; pass the wake-up on to it.
                drop(st);
                if probe_deadline.is_some() {
                    in_flight.completed = true;
                    return Err(RequestError::BadRequest);
                }
                session.wake.notify_one();
                break vec![Frame::noop()];
            }
            if !st.queue.is_empty() {
                // When closing, the `close` packet goes in the next response: the client
                // handles a response's packets before it sees the transport close.
                // As Node: compressed unless every packet was sent with `compress(false)`.
                let queued = st.take();
                compress = queued.iter().any(|q| q.compress.allowed());
                break queued.into_iter().map(|q| q.frame).collect();
            }
            if st.closing {
                drop(st);
                session.terminate(CloseReason::ForcedClose);
                break vec![Frame::close()];
            }
            if st.upgrade == Upgrade::Probing {
                if !first && probe_deadline.is_none() {
                    break vec![Frame::noop()];
                }
                let deadline =
                    *probe_deadline.get_or_insert_with(|| Instant::now() + PROBE_NOOP_DELAY);
                if Instant::now() >= deadline {
                    break vec![Frame::noop()];
                }
            }
        }
        first = false;
        let sleep = async {
            match probe_deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wake => {}
            _ = session.closed() => {}
            _ = sleep => {}
        }
    };
    in_flight.completed = true;
    drop(in_flight);
    let (body, content_type) = match session.protocol() {
        Protocol::V4 => (encode_payload(&frames), TEXT_PLAIN),
        Protocol::V3 {
            jsonp: Some(index), ..
        } => (
            jsonp::wrap(index, &encode_payload_v3(&frames, false).body),
            TEXT_PLAIN,
        ),
        Protocol::V3 { binary, .. } => {
            let out = encode_payload_v3(&frames, binary);
            (out.body, if out.binary { OCTET_STREAM } else { TEXT_PLAIN })
        }
    };
    Ok(payload_response(
        engine,
        req.headers(),
        body,
        content_type,
        compress,
    ))
}

async fn post<H: EngineHandler>(
    engine: &Arc<Engine<H>>,
    session: Arc<Session<H::Data>>,
    req: Request<Body>,
) -> Result<Response, RequestError> {
    let mut in_flight = match InFlight::claim(&session, false) {
        Ok(f) => f,
        Err(refused) => return refused.into_result(),
    };
    let max = engine.config.max_http_buffer_size;
    let binary_body = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.as_bytes())
        == Some(OCTET_STREAM.as_bytes());
    if binary_body && !session.is_v3() {
        // v4 polling payloads are text only.
        in_flight.completed = true;
        drop(in_flight);
        session.terminate(CloseReason::TransportError);
        return Ok(StatusCode::BAD_REQUEST.into_response());
    }
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        in_flight.completed = true;
        return Ok(StatusCode::PAYLOAD_TOO_LARGE.into_response());
    }
    let body = match Limited::new(req.into_body(), max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            in_flight.completed = true;
            return Ok(StatusCode::PAYLOAD_TOO_LARGE.into_response());
        }
        // The client went away mid-body: `in_flight` closes the session.
        Err(_) => return Ok(StatusCode::BAD_REQUEST.into_response()),
    };
    in_flight.completed = true;
    drop(in_flight);
    let decoded = match session.protocol() {
        Protocol::V4 => decode_payload(body),
        Protocol::V3 { jsonp: Some(_), .. } => match jsonp::unwrap(&body) {
            Some(payload) => decode_text_payload_v3(payload),
            // No `d` field: nothing to read, as Node.
            None => Ok(Vec::new()),
        },
        Protocol::V3 { .. } if binary_body => decode_binary_payload_v3(body),
        Protocol::V3 { .. } => decode_text_payload_v3(body),
    };
    let packets = match decoded {
        Ok(packets) => packets,
        Err(err) => {
            debug!(target: "engine:polling", sid = %session.sid(), "invalid payload: {err}");
            session.terminate(CloseReason::ParseError);
            return Ok(StatusCode::BAD_REQUEST.into_response());
        }
    };
    let _unwinding = EndOnUnwind(&session);
    for packet in packets {
        if session.is_closed() {
            break;
        }
        engine.on_packet(&session, packet);
    }
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/html")], "ok").into_response())
}

const TEXT_PLAIN: &str = "text/plain; charset=UTF-8";
/// A binary payload: v3 GET responses with binary packets, and v3 POST bodies.
const OCTET_STREAM: &str = "application/octet-stream";

pub(crate) fn text_response(status: StatusCode, body: Bytes) -> Response {
    body_response(status, body, TEXT_PLAIN)
}

fn body_response(status: StatusCode, body: Bytes, content_type: &'static str) -> Response {
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A GET response, compressed when it is large enough, `compress` allows it and
/// the client accepts it.
fn payload_response<H: EngineHandler>(
    engine: &Engine<H>,
    headers: &HeaderMap,
    body: Bytes,
    content_type: &'static str,
    compress: bool,
) -> Response {
    let threshold = engine.config.http_compression_threshold;
    let encoding = match threshold {
        Some(t) if compress && body.len() >= t => preferred_encoding(headers),
        _ => None,
    };
    let Some(encoding) = encoding else {
        return body_response(StatusCode::OK, body, content_type);
    };
    let compressed = match encoding {
        "gzip" => {
            let mut enc = GzEncoder::new(Vec::with_capacity(body.len() / 2), Compression::fast());
            enc.write_all(&body).and_then(|_| enc.finish())
        }
        _ => {
            let mut enc = ZlibEncoder::new(Vec::with_capacity(body.len() / 2), Compression::fast());
            enc.write_all(&body).and_then(|_| enc.finish())
        }
    };
    match compressed {
        Ok(data) => {
            let mut res = body_response(StatusCode::OK, Bytes::from(data), content_type);
            res.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
            res.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
            res
        }
        Err(_) => body_response(StatusCode::OK, body, content_type),
    }
}

/// `gzip` or `deflate` from `Accept-Encoding`, in the client's order of preference.
fn preferred_encoding(headers: &HeaderMap) -> Option<&'static str> {
    let accept = headers.get(header::ACCEPT_ENCODING)?.to_str().ok()?;
    let mut best: Option<(&'static str, f32)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let name = parts.next().unwrap_or("").trim();
        let q = parts
            .find_map(|p| p.trim().strip_prefix("q="))
            .and_then(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let known = match name {
            "gzip" => "gzip",
            "deflate" => "deflate",
            _ => continue,
        };
        if q > 0.0 && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((known, q));
        }
    }
    best.map(|(name, _)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(v: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_static(v));
        h
    }

    #[test]
    fn picks_encoding() {
        assert_eq!(
            preferred_encoding(&accept("gzip, deflate, br")),
            Some("gzip")
        );
        assert_eq!(preferred_encoding(&accept("deflate")), Some("deflate"));
        assert_eq!(
            preferred_encoding(&accept("gzip;q=0.5, deflate")),
            Some("deflate")
        );
        assert_eq!(preferred_encoding(&accept("gzip;q=0")), None);
        assert_eq!(preferred_encoding(&accept("br")), None);
        assert_eq!(preferred_encoding(&HeaderMap::new()), None);
    }
}
