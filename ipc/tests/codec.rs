//! Encoding and decoding of messages and frames, without sockets.

mod common;

use std::collections::HashSet;

use bytes::{BufMut, Bytes, BytesMut};
use proptest::prelude::*;
use rsio_ipc::{decode, encode, CodecError, EncodedFrame, Frame, IpcCodec, Message};
use tokio_util::codec::{Decoder, Encoder};

fn encoded(msg: &Message) -> Bytes {
    let mut buf = BytesMut::new();
    encode(msg, &mut buf);
    buf.freeze()
}

/// The framed bytes of `msgs`, one after the other.
fn framed(msgs: &[Message]) -> BytesMut {
    let mut codec = IpcCodec::new();
    let mut buf = BytesMut::new();
    for m in msgs {
        codec.encode(m, &mut buf).unwrap();
    }
    buf
}

/// Feeds `bytes` to a fresh decoder in chunks of the given sizes (cycled), collecting messages.
fn decode_in_chunks(bytes: &[u8], sizes: &[usize]) -> Vec<Message> {
    let mut codec = IpcCodec::new();
    let mut src = BytesMut::new();
    let mut out = Vec::new();
    let mut pos = 0;
    let mut i = 0;
    while pos < bytes.len() {
        let n = sizes[i % sizes.len()].max(1).min(bytes.len() - pos);
        i += 1;
        src.extend_from_slice(&bytes[pos..pos + n]);
        pos += n;
        while let Some(m) = codec.decode(&mut src).unwrap() {
            out.push(m);
        }
    }
    assert!(src.is_empty(), "bytes left over");
    out
}

#[test]
fn samples_cover_every_variant() {
    let kinds: HashSet<_> = common::samples().iter().map(Message::kind_name).collect();
    assert_eq!(kinds.len(), common::VARIANTS);
}

#[test]
fn every_sample_round_trips_through_encode_decode() {
    for msg in common::samples() {
        let got = decode(encoded(&msg)).unwrap_or_else(|e| panic!("{}: {e}", msg.kind_name()));
        assert_eq!(got, msg);
    }
}

#[test]
fn every_sample_round_trips_through_the_codec() {
    let msgs = common::samples();
    let mut src = framed(&msgs);
    let mut codec = IpcCodec::new();
    for msg in &msgs {
        assert_eq!(codec.decode(&mut src).unwrap().as_ref(), Some(msg));
    }
    assert_eq!(codec.decode(&mut src).unwrap(), None);
    assert_eq!(codec.decode_eof(&mut src).unwrap(), None);
}

#[test]
fn encoded_frame_is_the_codec_frame() {
    for msg in common::samples() {
        let frame = EncodedFrame::encode(&msg, usize::MAX).unwrap();
        assert_eq!(
            &frame.as_bytes()[..],
            &framed(std::slice::from_ref(&msg))[..]
        );
        assert_eq!(
            u32::from_be_bytes(frame.as_bytes()[..4].try_into().unwrap()) as usize,
            frame.len() - 4
        );
        assert_eq!(frame.decode().unwrap(), msg);
    }
}

#[test]
fn tags_are_distinct_and_hello_is_stable() {
    let tags: HashSet<u8> = common::samples().iter().map(|m| encoded(m)[0]).collect();
    assert_eq!(tags.len(), common::VARIANTS);
    // Hello's layout must never change: tag 0, then postcard varints of version, worker, pid.
    let hello = Message::Hello {
        version: 1,
        worker: 2,
        pid: 300,
    };
    assert_eq!(&encoded(&hello)[..], &[0, 1, 2, 0xac, 0x02]);
}

#[test]
fn helpers() {
    for msg in common::samples() {
        let to = match &msg {
            Message::RestoreSessionResponse { to, .. }
            | Message::FetchSocketsResponse { to, .. }
            | Message::ServerSideEmitResponse { to, .. }
            | Message::BroadcastClientCount { to, .. }
            | Message::BroadcastAck { to, .. } => Some(*to),
            _ => None,
        };
        assert_eq!(msg.is_response(), to, "{}", msg.kind_name());
        assert!(!(msg.is_relayed() && to.is_some()));
        assert!(!msg.kind_name().is_empty());
    }
    assert!(common::samples()
        .iter()
        .any(|m| matches!(m, Message::Broadcast(_)) && m.is_relayed()));
}

#[test]
fn broadcast_decode_is_zero_copy() {
    let msg = common::samples()
        .into_iter()
        .find(|m| matches!(m, Message::Broadcast(b) if b.frames.len() == 3))
        .unwrap();
    // Through `decode`.
    let bytes = encoded(&msg);
    let range = bytes.as_ptr_range();
    let Message::Broadcast(b) = decode(bytes.clone()).unwrap() else {
        panic!("not a broadcast")
    };
    assert_eq!(b.frames.len(), 3);
    for f in &b.frames {
        let p = f.bytes().as_ptr_range();
        assert!(
            range.start <= p.start && p.end <= range.end,
            "frame was copied"
        );
    }
    // Through the codec: the frames point into the receive buffer.
    let mut src = framed(std::slice::from_ref(&msg));
    let range = src.as_ptr_range();
    let Some(Message::Broadcast(b)) = IpcCodec::new().decode(&mut src).unwrap() else {
        panic!("not a broadcast")
    };
    for f in b.frames.iter().filter(|f| !f.bytes().is_empty()) {
        let p = f.bytes().as_ptr_range();
        assert!(
            range.start <= p.start && p.end <= range.end,
            "frame was copied"
        );
    }
}

#[test]
fn payload_decode_is_zero_copy() {
    let msg = common::samples()
        .into_iter()
        .find(|m| matches!(m, Message::BroadcastAck { .. }))
        .unwrap();
    let bytes = encoded(&msg);
    let range = bytes.as_ptr_range();
    let Message::BroadcastAck { payload, .. } = decode(bytes.clone()).unwrap() else {
        panic!()
    };
    let p = payload.json.as_ptr_range();
    assert!(range.start <= p.start && p.end <= range.end);
}

#[test]
fn torn_frames_one_byte_at_a_time() {
    let msgs = common::samples();
    let bytes = framed(&msgs);
    assert_eq!(decode_in_chunks(&bytes, &[1]), msgs);
    assert_eq!(decode_in_chunks(&bytes, &[3, 1, 4, 1, 5, 9, 2, 6]), msgs);
}

#[test]
fn four_gib_prefix_is_refused_without_allocating() {
    let mut codec = IpcCodec::new();
    let mut src = BytesMut::with_capacity(16);
    src.put_u32(u32::MAX);
    src.put_u8(0);
    let err = codec.decode(&mut src).unwrap_err();
    assert!(
        matches!(err, CodecError::TooLarge { len, max } if len == u32::MAX as u64 && max == rsio_ipc::DEFAULT_MAX_FRAME_LENGTH),
        "{err:?}"
    );
    assert!(src.capacity() < 1024, "reserved {} bytes", src.capacity());
}

#[test]
fn frame_limit_is_exact() {
    let msg = Message::Stats { connections: 1 };
    let len = encoded(&msg).len();
    let mut codec = IpcCodec::with_max_frame_length(len);
    let mut src = framed(std::slice::from_ref(&msg));
    assert_eq!(codec.decode(&mut src).unwrap(), Some(msg.clone()));
    let mut small = IpcCodec::with_max_frame_length(len - 1);
    let mut src = framed(std::slice::from_ref(&msg));
    assert!(matches!(
        small.decode(&mut src),
        Err(CodecError::TooLarge { .. })
    ));
    // The encoder refuses too, and leaves the buffer as it was.
    let mut dst = BytesMut::from(&b"keep"[..]);
    assert!(matches!(
        small.encode(&msg, &mut dst),
        Err(CodecError::TooLarge { .. })
    ));
    assert_eq!(&dst[..], b"keep");
    assert!(EncodedFrame::encode(&msg, len - 1).is_err());
}

#[test]
fn malformed_bodies_give_typed_errors() {
    let err = |bytes: &[u8]| decode(Bytes::copy_from_slice(bytes)).unwrap_err();
    assert!(matches!(err(&[]), CodecError::Truncated));
    assert!(matches!(err(&[200]), CodecError::UnknownTag(200)));
    assert!(matches!(err(&[1, 0]), CodecError::TrailingBytes(1)));
    // Hello cut short.
    assert!(matches!(err(&[0, 1]), CodecError::Truncated));
    // A bool that is neither 0 nor 1 (DisconnectSockets.close).
    let disconnect = common::samples()
        .into_iter()
        .find(|m| matches!(m, Message::DisconnectSockets { .. }))
        .unwrap();
    let mut ok = encoded(&disconnect).to_vec();
    assert!(matches!(
        decode(Bytes::from(ok.clone())),
        Ok(Message::DisconnectSockets { .. })
    ));
    *ok.last_mut().unwrap() = 7;
    assert!(matches!(err(&ok), CodecError::Malformed(_)));
    // Broadcast whose text frame is not UTF-8: nsp "", empty target (rooms, except,
    // volatile, uncompressed), no ack, no offset,
    // one text frame of 2 bytes.
    assert!(matches!(
        err(&[16, 0, 0, 0, 0, 0, 0, 0, 1, 4, 0xff, 0xfe]),
        CodecError::InvalidUtf8
    ));
    assert!(matches!(
        err(&[16, 0, 0, 0, 0, 0, 0, 0, 1, 6, 0xff, 0xfe]),
        CodecError::Truncated
    ));
    // Same frame as binary is fine; one byte more is trailing.
    assert!(decode(Bytes::from_static(&[
        16, 0, 0, 0, 0, 0, 0, 0, 1, 5, 0xff, 0xfe
    ]))
    .is_ok());
    assert!(matches!(
        err(&[16, 0, 0, 0, 0, 0, 0, 0, 1, 5, 0xff, 0xfe, 0]),
        CodecError::TrailingBytes(1)
    ));
    // A payload with no length at all.
    assert!(matches!(err(&[35, 0, 0, 0, 0]), CodecError::Malformed(_)));
    // A chunk length beyond usize / the frame.
    let mut huge = vec![16, 0, 0, 0, 0, 0, 0, 1];
    huge.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    assert!(matches!(err(&huge), CodecError::Truncated));
}

#[test]
fn garbage_after_a_valid_prefix_is_an_error() {
    let mut src = BytesMut::new();
    src.put_u32(5);
    src.extend_from_slice(&[16, 0xff, 0xff, 0xff, 0xff]);
    assert!(IpcCodec::new().decode(&mut src).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_message_round_trips(msg in common::arb_message()) {
        prop_assert_eq!(decode(encoded(&msg)).unwrap(), msg.clone());
        let frame = EncodedFrame::encode(&msg, usize::MAX).unwrap();
        prop_assert_eq!(frame.decode().unwrap(), msg);
    }

    #[test]
    fn torn_frames_in_random_chunks(
        msgs in proptest::collection::vec(common::arb_message(), 1..8),
        sizes in proptest::collection::vec(1usize..64, 1..16),
    ) {
        let bytes = framed(&msgs);
        prop_assert_eq!(decode_in_chunks(&bytes, &sizes), msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(Bytes::from(bytes.clone()));
        let mut codec = IpcCodec::with_max_frame_length(1024);
        let mut src = BytesMut::from(&bytes[..]);
        while let Ok(Some(_)) = codec.decode(&mut src) {}
    }

    #[test]
    fn arbitrary_bodies_after_each_tag_never_panic(tag in 0u8..40, body in proptest::collection::vec(any::<u8>(), 0..128)) {
        let mut src = BytesMut::new();
        src.put_u32(body.len() as u32 + 1);
        src.put_u8(tag);
        src.extend_from_slice(&body);
        if let Ok(Some(Message::Broadcast(b))) = IpcCodec::new().decode(&mut src) {
            for f in b.frames {
                if let Frame::Text(t) = f {
                    prop_assert!(std::str::from_utf8(&t).is_ok());
                }
            }
        }
    }
}
