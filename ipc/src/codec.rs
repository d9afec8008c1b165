//! Encoding of one message: a 1-byte tag, then the body.
//!
//! The length prefix that delimits messages on the stream is added by
//! [`IpcCodec`](crate::IpcCodec); [`encode`] and [`decode`] only deal with what follows it.
//!
//! Bodies:
//! - control and adapter messages: `postcard` of the variant's fields, in declaration order;
//! - messages that carry bytes ([`Message::Broadcast`], and the ones with an [`EventPayload`]):
//!   `postcard` of the small fields plus the lengths of the byte chunks, then the chunks
//!   appended raw, one after the other. Encoding copies each chunk once; decoding slices
//!   the received [`Bytes`] without copying.
//!
//! Tags are fixed per variant (see `tag`), so reordering the enum never changes the wire.
//! `Hello`'s tag and layout must never change: it carries the protocol version.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize, Serializer};

use crate::message::{
    Broadcast, EventPayload, Frame, Message, RequestId, Session, SocketInfo, Target, WorkerIndex,
};

/// The largest frame accepted by default (64 MiB), length prefix excluded.
pub const DEFAULT_MAX_FRAME_LENGTH: usize = 64 * 1024 * 1024;

/// Errors of reading or decoding messages.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// Reading from or writing to the socket failed.
    #[error("ipc i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// A frame (announced or to be sent) is larger than the configured maximum.
    #[error("ipc frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Length of the frame, length prefix excluded.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The tag byte names no known message.
    #[error("unknown ipc message tag {0}")]
    UnknownTag(u8),
    /// The body is not a valid encoding of the message.
    #[error("malformed ipc message: {0}")]
    Malformed(postcard::Error),
    /// A text frame of a broadcast is not valid UTF-8.
    #[error("ipc broadcast text frame is not valid UTF-8")]
    InvalidUtf8,
    /// The frame ends before the message does.
    #[error("truncated ipc message")]
    Truncated,
    /// The frame goes on after the message ends.
    #[error("{0} unexpected bytes after the ipc message")]
    TrailingBytes(usize),
}

impl From<postcard::Error> for CodecError {
    fn from(e: postcard::Error) -> Self {
        match e {
            postcard::Error::DeserializeUnexpectedEnd => CodecError::Truncated,
            e => CodecError::Malformed(e),
        }
    }
}

/// The tag byte of each message kind.
mod tag {
    pub const HELLO: u8 = 0;
    pub const READY: u8 = 1;
    pub const DRAIN: u8 = 2;
    pub const WORKER_EXITED: u8 = 3;
    pub const WORKER_JOINED: u8 = 4;
    pub const STATS: u8 = 5;
    pub const HEARTBEAT: u8 = 6;
    pub const RECOVERY_ON: u8 = 7;
    pub const SESSION_UPDATE: u8 = 8;
    pub const SESSION_CLOSED: u8 = 9;
    pub const RESTORE_SESSION: u8 = 10;
    pub const RESTORE_SESSION_RESPONSE: u8 = 36;
    pub const ROOM_INTEREST: u8 = 11;
    pub const METRICS: u8 = 12;
    pub const RETIRE: u8 = 13;
    pub const FENCE: u8 = 14;
    pub const FENCE_REQUEST: u8 = 15;
    pub const FENCE_DONE: u8 = 44;
    pub const BROADCAST: u8 = 16;
    pub const SOCKETS_JOIN: u8 = 17;
    pub const SOCKETS_LEAVE: u8 = 18;
    pub const DISCONNECT_SOCKETS: u8 = 19;
    pub const FETCH_SOCKETS: u8 = 20;
    pub const SERVER_SIDE_EMIT: u8 = 21;
    pub const FETCH_SOCKETS_RESPONSE: u8 = 32;
    pub const SERVER_SIDE_EMIT_RESPONSE: u8 = 33;
    pub const BROADCAST_CLIENT_COUNT: u8 = 34;
    pub const BROADCAST_ACK: u8 = 35;
    pub const REDIS_ENTRY: u8 = 40;
    pub const REDIS_MESSAGE: u8 = 41;
    pub const REDIS_MEMBER: u8 = 42;
    pub const LINK_STUCK: u8 = 43;
}

/// Appends the encoding of `msg` (tag, then body) to `dst`.
pub fn encode(msg: &Message, dst: &mut BytesMut) {
    match msg {
        Message::Hello {
            version,
            worker,
            pid,
        } => put(dst, tag::HELLO, &(version, worker, pid)),
        Message::Ready => dst.put_u8(tag::READY),
        Message::Drain => dst.put_u8(tag::DRAIN),
        Message::Retire => dst.put_u8(tag::RETIRE),
        Message::WorkerExited { worker } => put(dst, tag::WORKER_EXITED, worker),
        Message::WorkerJoined { worker } => put(dst, tag::WORKER_JOINED, worker),
        Message::Fence { id } => put(dst, tag::FENCE, id),
        Message::FenceRequest { id } => put(dst, tag::FENCE_REQUEST, id),
        Message::FenceDone { id } => put(dst, tag::FENCE_DONE, id),
        Message::Stats { connections } => put(dst, tag::STATS, connections),
        Message::RoomInterest { nsp, room, present } => {
            put(dst, tag::ROOM_INTEREST, &(nsp, room, present))
        }
        Message::Heartbeat => dst.put_u8(tag::HEARTBEAT),
        Message::Metrics {
            counters,
            gauges,
            namespaces,
        } => put(dst, tag::METRICS, &(counters, gauges, namespaces)),
        Message::RecoveryOn {
            nsp,
            max_disconnection_ms,
        } => put(dst, tag::RECOVERY_ON, &(nsp, max_disconnection_ms)),
        Message::SessionUpdate(session) => put(dst, tag::SESSION_UPDATE, session),
        Message::SessionClosed {
            nsp,
            pid,
            recoverable,
        } => put(dst, tag::SESSION_CLOSED, &(nsp, pid, recoverable)),
        Message::RestoreSession {
            from,
            request,
            nsp,
            pid,
            offset,
        } => put(
            dst,
            tag::RESTORE_SESSION,
            &(from, request, nsp, pid, offset),
        ),
        Message::RestoreSessionResponse {
            to,
            request,
            session,
            missed,
            horizon,
        } => {
            // A rare message: the frames are copied into the postcard body.
            let missed: Vec<Vec<(bool, &[u8])>> = missed
                .iter()
                .map(|p| {
                    p.iter()
                        .map(|f| (f.is_binary(), f.bytes().as_ref()))
                        .collect()
                })
                .collect();
            put(
                dst,
                tag::RESTORE_SESSION_RESPONSE,
                &(to, request, session, missed, horizon),
            )
        }
        Message::Broadcast(b) => {
            let header = (&b.nsp, &b.target, &b.ack, &b.offset, FrameLens(&b.frames));
            put(dst, tag::BROADCAST, &header);
            dst.reserve(b.frames.iter().map(|f| f.bytes().len()).sum());
            for f in &b.frames {
                dst.extend_from_slice(f.bytes());
            }
        }
        Message::SocketsJoin { nsp, target, rooms } => {
            put(dst, tag::SOCKETS_JOIN, &(nsp, target, rooms))
        }
        Message::SocketsLeave { nsp, target, rooms } => {
            put(dst, tag::SOCKETS_LEAVE, &(nsp, target, rooms))
        }
        Message::DisconnectSockets { nsp, target, close } => {
            put(dst, tag::DISCONNECT_SOCKETS, &(nsp, target, close))
        }
        Message::FetchSockets {
            from,
            nsp,
            target,
            request,
        } => put(dst, tag::FETCH_SOCKETS, &(from, nsp, target, request)),
        Message::ServerSideEmit {
            from,
            nsp,
            event,
            payload,
            request,
        } => {
            let header = (from, nsp, event, request, PayloadLens(payload));
            put(dst, tag::SERVER_SIDE_EMIT, &header);
            put_payload(dst, payload);
        }
        Message::FetchSocketsResponse {
            from,
            to,
            request,
            sockets,
        } => put(
            dst,
            tag::FETCH_SOCKETS_RESPONSE,
            &(from, to, request, sockets),
        ),
        Message::ServerSideEmitResponse {
            from,
            to,
            request,
            payload,
        } => {
            let header = (from, to, request, PayloadLens(payload));
            put(dst, tag::SERVER_SIDE_EMIT_RESPONSE, &header);
            put_payload(dst, payload);
        }
        Message::BroadcastClientCount {
            from,
            to,
            request,
            count,
        } => put(
            dst,
            tag::BROADCAST_CLIENT_COUNT,
            &(from, to, request, count),
        ),
        Message::BroadcastAck {
            from,
            to,
            request,
            payload,
        } => {
            let header = (from, to, request, PayloadLens(payload));
            put(dst, tag::BROADCAST_ACK, &header);
            put_payload(dst, payload);
        }
        Message::RedisEntry { id, fields } => {
            put(dst, tag::REDIS_ENTRY, &(id, ChunkLens(fields)));
            put_chunks(dst, fields);
        }
        Message::RedisMessage { channel, payload } => {
            put(
                dst,
                tag::REDIS_MESSAGE,
                &(channel, ChunkLens(std::slice::from_ref(payload))),
            );
            put_chunks(dst, std::slice::from_ref(payload));
        }
        Message::RedisMember {
            nsp,
            uid,
            own_entries,
        } => put(dst, tag::REDIS_MEMBER, &(nsp, uid, own_entries)),
        Message::LinkStuck { lane, epoch } => put(dst, tag::LINK_STUCK, &(lane, epoch)),
    }
}

/// A rough size of the encoding of `msg`, to size buffers before [`encode`].
pub fn size_hint(msg: &Message) -> usize {
    const HEADER: usize = 64;
    match msg {
        Message::Broadcast(b) => {
            HEADER + b.nsp.len() + b.frames.iter().map(|f| f.bytes().len()).sum::<usize>()
        }
        Message::ServerSideEmit { payload, .. }
        | Message::ServerSideEmitResponse { payload, .. }
        | Message::BroadcastAck { payload, .. } => {
            HEADER + payload.json.len() + payload.attachments.iter().map(Bytes::len).sum::<usize>()
        }
        Message::RedisEntry { id, fields } => {
            HEADER + id.len() + fields.iter().map(|f| 2 + f.len()).sum::<usize>()
        }
        Message::RedisMessage { channel, payload } => HEADER + channel.len() + payload.len(),
        Message::FetchSocketsResponse { sockets, .. } => {
            HEADER
                + sockets
                    .iter()
                    .map(|s| HEADER + s.id.len() + s.handshake.len() + s.data.len())
                    .sum::<usize>()
        }
        _ => HEADER,
    }
}

/// Decodes one message from `frame` (tag, then body; no length prefix).
///
/// Byte chunks of the result (broadcast frames, payloads) are slices of `frame`: no copy.
pub fn decode(frame: Bytes) -> Result<Message, CodecError> {
    let (&t, body) = frame.split_first().ok_or(CodecError::Truncated)?;
    let msg = match t {
        tag::HELLO => {
            let (version, worker, pid) = exact(body)?;
            Message::Hello {
                version,
                worker,
                pid,
            }
        }
        tag::READY => unit(body, Message::Ready)?,
        tag::DRAIN => unit(body, Message::Drain)?,
        tag::RETIRE => unit(body, Message::Retire)?,
        tag::WORKER_EXITED => Message::WorkerExited {
            worker: exact(body)?,
        },
        tag::WORKER_JOINED => Message::WorkerJoined {
            worker: exact(body)?,
        },
        tag::FENCE => Message::Fence { id: exact(body)? },
        tag::FENCE_REQUEST => Message::FenceRequest { id: exact(body)? },
        tag::FENCE_DONE => Message::FenceDone { id: exact(body)? },
        tag::STATS => Message::Stats {
            connections: exact(body)?,
        },
        tag::HEARTBEAT => unit(body, Message::Heartbeat)?,
        tag::METRICS => {
            let (counters, gauges, namespaces) = exact(body)?;
            Message::Metrics {
                counters,
                gauges,
                namespaces,
            }
        }
        tag::ROOM_INTEREST => {
            let (nsp, room, present) = exact(body)?;
            Message::RoomInterest { nsp, room, present }
        }
        tag::RECOVERY_ON => {
            let (nsp, max_disconnection_ms) = exact(body)?;
            Message::RecoveryOn {
                nsp,
                max_disconnection_ms,
            }
        }
        tag::SESSION_UPDATE => Message::SessionUpdate(exact(body)?),
        tag::SESSION_CLOSED => {
            let (nsp, pid, recoverable) = exact(body)?;
            Message::SessionClosed {
                nsp,
                pid,
                recoverable,
            }
        }
        tag::RESTORE_SESSION => {
            let (from, request, nsp, pid, offset) = exact(body)?;
            Message::RestoreSession {
                from,
                request,
                nsp,
                pid,
                offset,
            }
        }
        tag::RESTORE_SESSION_RESPONSE => {
            type Body = (
                WorkerIndex,
                RequestId,
                Option<Session>,
                Vec<Vec<(bool, Vec<u8>)>>,
                u64,
            );
            let (to, request, session, missed, horizon): Body = exact(body)?;
            let mut packets = Vec::with_capacity(missed.len());
            for packet in missed {
                let mut frames = Vec::with_capacity(packet.len());
                for (binary, data) in packet {
                    frames.push(if binary {
                        Frame::Binary(Bytes::from(data))
                    } else {
                        String::from_utf8(data)
                            .map(|s| Frame::Text(Bytes::from(s)))
                            .map_err(|_| CodecError::InvalidUtf8)?
                    });
                }
                packets.push(frames);
            }
            Message::RestoreSessionResponse {
                to,
                request,
                session,
                missed: packets,
                horizon,
            }
        }
        tag::BROADCAST => {
            type Header = (
                String,
                Target,
                Option<(WorkerIndex, RequestId, u64)>,
                Option<u64>,
                Vec<u64>,
            );
            let ((nsp, target, ack, offset, lens), rest) =
                postcard::take_from_bytes::<Header>(body)?;
            let mut tail = Tail::new(&frame, rest);
            let mut frames = Vec::with_capacity(lens.len());
            for l in lens {
                let bytes = tail.take(l >> 1)?;
                frames.push(if l & 1 == 1 {
                    Frame::Binary(bytes)
                } else {
                    std::str::from_utf8(&bytes).map_err(|_| CodecError::InvalidUtf8)?;
                    Frame::Text(bytes)
                });
            }
            tail.finish()?;
            Message::Broadcast(Broadcast {
                nsp,
                target,
                ack,
                offset,
                frames,
            })
        }
        tag::SOCKETS_JOIN => {
            let (nsp, target, rooms) = exact(body)?;
            Message::SocketsJoin { nsp, target, rooms }
        }
        tag::SOCKETS_LEAVE => {
            let (nsp, target, rooms) = exact(body)?;
            Message::SocketsLeave { nsp, target, rooms }
        }
        tag::DISCONNECT_SOCKETS => {
            let (nsp, target, close) = exact(body)?;
            Message::DisconnectSockets { nsp, target, close }
        }
        tag::FETCH_SOCKETS => {
            let (from, nsp, target, request) = exact(body)?;
            Message::FetchSockets {
                from,
                nsp,
                target,
                request,
            }
        }
        tag::SERVER_SIDE_EMIT => {
            type Header = (WorkerIndex, String, String, Option<RequestId>, Vec<u64>);
            let ((from, nsp, event, request, lens), rest) =
                postcard::take_from_bytes::<Header>(body)?;
            let payload = take_payload(&frame, rest, lens)?;
            Message::ServerSideEmit {
                from,
                nsp,
                event,
                payload,
                request,
            }
        }
        tag::FETCH_SOCKETS_RESPONSE => {
            let (from, to, request, sockets): (
                WorkerIndex,
                WorkerIndex,
                RequestId,
                Vec<SocketInfo>,
            ) = exact(body)?;
            Message::FetchSocketsResponse {
                from,
                to,
                request,
                sockets,
            }
        }
        tag::SERVER_SIDE_EMIT_RESPONSE => {
            let ((from, to, request, lens), rest) = postcard::take_from_bytes(body)?;
            let payload = take_payload(&frame, rest, lens)?;
            Message::ServerSideEmitResponse {
                from,
                to,
                request,
                payload,
            }
        }
        tag::BROADCAST_CLIENT_COUNT => {
            let (from, to, request, count) = exact(body)?;
            Message::BroadcastClientCount {
                from,
                to,
                request,
                count,
            }
        }
        tag::BROADCAST_ACK => {
            let ((from, to, request, lens), rest) = postcard::take_from_bytes(body)?;
            let payload = take_payload(&frame, rest, lens)?;
            Message::BroadcastAck {
                from,
                to,
                request,
                payload,
            }
        }
        tag::REDIS_ENTRY => {
            let ((id, lens), rest) = postcard::take_from_bytes::<(String, Vec<u64>)>(body)?;
            let fields = take_chunks(&frame, rest, lens)?;
            Message::RedisEntry { id, fields }
        }
        tag::REDIS_MESSAGE => {
            let ((channel, lens), rest) = postcard::take_from_bytes::<(String, Vec<u64>)>(body)?;
            let mut chunks = take_chunks(&frame, rest, lens)?;
            let (Some(payload), None) = (chunks.pop(), chunks.pop()) else {
                return Err(CodecError::Malformed(
                    postcard::Error::DeserializeBadEncoding,
                ));
            };
            Message::RedisMessage { channel, payload }
        }
        tag::REDIS_MEMBER => {
            let (nsp, uid, own_entries) = exact(body)?;
            Message::RedisMember {
                nsp,
                uid,
                own_entries,
            }
        }
        tag::LINK_STUCK => {
            let (lane, epoch) = exact(body)?;
            Message::LinkStuck { lane, epoch }
        }
        other => return Err(CodecError::UnknownTag(other)),
    };
    Ok(msg)
}

/// Writes the tag and the postcard encoding of `value`.
fn put<T: Serialize + ?Sized>(dst: &mut BytesMut, tag: u8, value: &T) {
    dst.put_u8(tag);
    // Our types have known lengths and the flavor never runs out of room: this cannot fail.
    postcard::serialize_with_flavor(value, Append(dst))
        .expect("postcard serialisation into memory cannot fail");
}

/// Appends the raw chunks of a payload (lengths already written by [`PayloadLens`]).
fn put_payload(dst: &mut BytesMut, payload: &EventPayload) {
    dst.reserve(payload.json.len() + payload.attachments.iter().map(Bytes::len).sum::<usize>());
    dst.extend_from_slice(&payload.json);
    for a in &payload.attachments {
        dst.extend_from_slice(a);
    }
}

/// Decodes a body that must be exactly one `T`.
fn exact<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, CodecError> {
    let (value, rest) = postcard::take_from_bytes(body)?;
    match rest.len() {
        0 => Ok(value),
        n => Err(CodecError::TrailingBytes(n)),
    }
}

/// A message without a body.
fn unit(body: &[u8], msg: Message) -> Result<Message, CodecError> {
    match body.len() {
        0 => Ok(msg),
        n => Err(CodecError::TrailingBytes(n)),
    }
}

/// Rebuilds a payload from its chunk lengths (json first, then attachments).
fn take_payload(frame: &Bytes, rest: &[u8], lens: Vec<u64>) -> Result<EventPayload, CodecError> {
    let mut lens = lens.into_iter();
    let json_len = lens.next().ok_or(CodecError::Malformed(
        postcard::Error::DeserializeBadEncoding,
    ))?;
    let mut tail = Tail::new(frame, rest);
    let json = tail.take(json_len)?;
    let attachments = lens.map(|l| tail.take(l)).collect::<Result<_, _>>()?;
    tail.finish()?;
    Ok(EventPayload { json, attachments })
}

/// Appends raw chunks (lengths already written by [`ChunkLens`]).
fn put_chunks(dst: &mut BytesMut, chunks: &[Bytes]) {
    dst.reserve(chunks.iter().map(Bytes::len).sum());
    for c in chunks {
        dst.extend_from_slice(c);
    }
}

/// Slices the chunks announced by `lens` out of the frame.
fn take_chunks(frame: &Bytes, rest: &[u8], lens: Vec<u64>) -> Result<Vec<Bytes>, CodecError> {
    let mut tail = Tail::new(frame, rest);
    let chunks = lens
        .into_iter()
        .map(|l| tail.take(l))
        .collect::<Result<_, _>>()?;
    tail.finish()?;
    Ok(chunks)
}

/// The raw chunks after a header: slices of the frame, taken in order.
struct Tail<'a> {
    frame: &'a Bytes,
    pos: usize,
}

impl<'a> Tail<'a> {
    /// `rest` must be a suffix of `frame` (what postcard left after the header).
    fn new(frame: &'a Bytes, rest: &[u8]) -> Self {
        Tail {
            frame,
            pos: frame.len() - rest.len(),
        }
    }

    fn take(&mut self, len: u64) -> Result<Bytes, CodecError> {
        let remaining = self.frame.len() - self.pos;
        let len = usize::try_from(len).map_err(|_| CodecError::Truncated)?;
        if len > remaining {
            return Err(CodecError::Truncated);
        }
        let bytes = self.frame.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(bytes)
    }

    fn finish(self) -> Result<(), CodecError> {
        match self.frame.len() - self.pos {
            0 => Ok(()),
            n => Err(CodecError::TrailingBytes(n)),
        }
    }
}

/// Serialises the frames of a broadcast as a sequence of `len << 1 | is_binary`.
struct FrameLens<'a>(&'a [Frame]);

impl Serialize for FrameLens<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.0
                .iter()
                .map(|f| ((f.bytes().len() as u64) << 1) | u64::from(f.is_binary())),
        )
    }
}

/// Serialises the chunk lengths of a payload: json first, then each attachment.
struct PayloadLens<'a>(&'a EventPayload);

impl Serialize for PayloadLens<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let lens = std::iter::once(p.json.len()).chain(p.attachments.iter().map(Bytes::len));
        s.collect_seq(lens.map(|l| l as u64))
    }
}

/// Serialises the lengths of raw chunks.
struct ChunkLens<'a>(&'a [Bytes]);

impl Serialize for ChunkLens<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|c| c.len() as u64))
    }
}

/// A postcard output flavor appending to a `BytesMut`.
struct Append<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}
