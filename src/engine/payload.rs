//! HTTP long-polling payloads: packets joined by the record separator `\x1e`,
//! binary messages as `b` + base64.

use bytes::{BufMut, Bytes, BytesMut};

use super::packet::{base64_decode, base64_encode, Frame, Packet, PacketError};

/// The record separator between packets of a polling payload.
pub const SEPARATOR: u8 = 0x1e;

/// Decodes a POST body. The whole body is validated as UTF-8 first.
pub fn decode_payload(body: Bytes) -> Result<Vec<Packet>, PacketError> {
    if std::str::from_utf8(&body).is_err() {
        return Err(PacketError::InvalidUtf8);
    }
    let mut packets = Vec::new();
    let mut start = 0;
    loop {
        let end = body[start..]
            .iter()
            .position(|&b| b == SEPARATOR)
            .map_or(body.len(), |i| start + i);
        let part = body.slice(start..end);
        packets.push(decode_one(part)?);
        if end == body.len() {
            return Ok(packets);
        }
        start = end + 1;
    }
}

fn decode_one(part: Bytes) -> Result<Packet, PacketError> {
    match part.first() {
        Some(b'b') => Ok(Packet::Binary(Bytes::from(base64_decode(&part[1..])?))),
        _ => Packet::decode_text(part),
    }
}

/// Encodes frames into one GET response body.
pub fn encode_payload(frames: &[Frame]) -> Bytes {
    let size: usize = frames
        .iter()
        .map(|f| match f {
            Frame::Text(t) => t.len() + 1,
            Frame::Binary(b) => b.len().div_ceil(3) * 4 + 2,
        })
        .sum();
    let mut out = BytesMut::with_capacity(size);
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.put_u8(SEPARATOR);
        }
        match frame {
            Frame::Text(t) => out.put_slice(t.as_bytes()),
            Frame::Binary(b) => {
                out.put_u8(b'b');
                out.put_slice(base64_encode(b).as_bytes());
            }
        }
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(s: &str) -> Result<Vec<Packet>, PacketError> {
        decode_payload(Bytes::from(s.to_owned()))
    }

    #[test]
    fn table() {
        let msg = |s: &'static str| Packet::Message(Bytes::from_static(s.as_bytes()));
        assert_eq!(decode("4hello").unwrap(), vec![msg("hello")]);
        assert_eq!(
            decode("4test1\x1e4test2\x1e4test3").unwrap(),
            vec![msg("test1"), msg("test2"), msg("test3")]
        );
        assert_eq!(
            decode("4hello\x1ebAQIDBA==").unwrap(),
            vec![
                msg("hello"),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))
            ]
        );
        assert_eq!(
            decode("3\x1e1").unwrap(),
            vec![Packet::Pong(Bytes::new()), Packet::Close]
        );
        assert_eq!(decode("abc"), Err(PacketError::UnknownType(b'a')));
        assert_eq!(decode(""), Err(PacketError::Empty));
        assert_eq!(decode("4a\x1e"), Err(PacketError::Empty));
        assert_eq!(decode("b!!"), Err(PacketError::InvalidBase64));
        assert_eq!(
            decode_payload(Bytes::from_static(b"4\xff")),
            Err(PacketError::InvalidUtf8)
        );
    }

    #[test]
    fn encodes() {
        let frames = [
            Frame::message("hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
            Frame::ping(),
        ];
        assert_eq!(&encode_payload(&frames)[..], b"4hello\x1ebAQIDBA==\x1e2");
        assert_eq!(&encode_payload(&[])[..], b"");
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            "[^\x1e]{0,30}".prop_map(|s| Frame::message(&s)),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Frame::Binary(v.into())),
        ]
    }

    fn frame_to_packet(f: &Frame) -> Packet {
        match f {
            Frame::Text(t) => Packet::decode_text(Bytes::from(t.clone())).unwrap(),
            Frame::Binary(b) => Packet::Binary(b.clone()),
        }
    }

    proptest! {
        #[test]
        fn round_trip(frames in proptest::collection::vec(arb_frame(), 1..8)) {
            let body = encode_payload(&frames);
            let decoded = decode_payload(body).unwrap();
            let expected: Vec<Packet> = frames.iter().map(frame_to_packet).collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_payload(Bytes::from(data));
        }
    }
}
