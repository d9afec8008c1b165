//! Engine.IO v3 polling payloads (Socket.IO v2 clients, `allow_eio3`).
//!
//! Text payload: `<length>:<packet>` repeated, the length in UTF-16 code units
//! (what JavaScript's `String.length` counts); binary messages as `b4<base64>`.
//! Binary payload (clients that support binary, i.e. without `b64=1`):
//! per packet `<0 = text | 1 = binary><length as digit bytes 0–9><0xFF><packet>`,
//! the length in bytes, a binary packet starting with its type byte (`4`).

use bytes::{BufMut, Bytes, BytesMut};

use super::packet::{base64_decode, base64_encode, Frame, Packet, PacketError};

/// Longest length prefix accepted: more digits than any body we read can need.
const MAX_LENGTH_DIGITS: usize = 10;

/// The numeric type of a message packet, as the first byte of a v3 binary packet.
const MESSAGE_TYPE: u8 = 4;

/// Decodes a v3 text packet: `<type><data>`, or `b<type><base64>` for binary.
pub fn decode_packet_v3(data: Bytes) -> Result<Packet, PacketError> {
    match data.first() {
        Some(b'b') => match data.get(1) {
            Some(b'4') => Ok(Packet::Binary(Bytes::from(base64_decode(&data[2..])?))),
            Some(&other) => Err(PacketError::UnknownType(other)),
            None => Err(PacketError::Empty),
        },
        _ => Packet::decode_text(data),
    }
}

/// Decodes a v3 binary WebSocket message: the type byte, then the data.
pub fn decode_binary_message_v3(data: Bytes) -> Result<Packet, PacketError> {
    match data.first() {
        Some(&MESSAGE_TYPE) => Ok(Packet::Binary(data.slice(1..))),
        Some(&other) => Err(PacketError::UnknownType(other)),
        None => Err(PacketError::Empty),
    }
}

/// Decodes a v3 text payload (`6:4hello10:b4AQIDBA==`). Empty packets (`0:`)
/// are skipped, as Node does; the body must be UTF-8.
pub fn decode_text_payload_v3(body: Bytes) -> Result<Vec<Packet>, PacketError> {
    let text = std::str::from_utf8(&body).map_err(|_| PacketError::InvalidUtf8)?;
    if text.is_empty() {
        return Err(PacketError::Empty);
    }
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < text.len() {
        let colon = text[pos..]
            .find(':')
            .map(|i| pos + i)
            .ok_or(PacketError::InvalidLength)?;
        let units = parse_length(&body[pos..colon])?;
        let start = colon + 1;
        let end = start + utf16_prefix_bytes(&text[start..], units)?;
        if end > start {
            packets.push(decode_packet_v3(body.slice(start..end))?);
        }
        pos = end;
    }
    Ok(packets)
}

/// Decodes a v3 binary payload (a POST with `Content-Type: application/octet-stream`).
pub fn decode_binary_payload_v3(body: Bytes) -> Result<Vec<Packet>, PacketError> {
    if body.is_empty() {
        return Err(PacketError::Empty);
    }
    let mut packets = Vec::new();
    let mut pos = 0;
    while pos < body.len() {
        let is_text = match body[pos] {
            0 => true,
            1 => false,
            _ => return Err(PacketError::InvalidLength),
        };
        let digits_start = pos + 1;
        let sep = body[digits_start..]
            .iter()
            .take(MAX_LENGTH_DIGITS + 1)
            .position(|&b| b == 0xFF)
            .map(|i| digits_start + i)
            .ok_or(PacketError::InvalidLength)?;
        let mut len = 0usize;
        for &digit in &body[digits_start..sep] {
            if digit > 9 {
                return Err(PacketError::InvalidLength);
            }
            len = len * 10 + usize::from(digit);
        }
        if sep == digits_start {
            return Err(PacketError::InvalidLength);
        }
        let start = sep + 1;
        let end = start
            .checked_add(len)
            .filter(|&end| end <= body.len())
            .ok_or(PacketError::InvalidLength)?;
        let part = body.slice(start..end);
        packets.push(if is_text {
            if std::str::from_utf8(&part).is_err() {
                return Err(PacketError::InvalidUtf8);
            }
            decode_packet_v3(part)?
        } else {
            decode_binary_message_v3(part)?
        });
        pos = end;
    }
    Ok(packets)
}

/// A v3 GET response body; `binary` when it is in the binary payload format
/// (`Content-Type: application/octet-stream`).
pub struct EncodedV3 {
    /// The response body.
    pub body: Bytes,
    /// Whether `body` is a binary payload (else a text one).
    pub binary: bool,
}

/// Encodes frames into one v3 GET response body. A client that supports binary
/// gets the binary format when a binary frame is among them, as with Node.
pub fn encode_payload_v3(frames: &[Frame], supports_binary: bool) -> EncodedV3 {
    let binary = supports_binary && frames.iter().any(|f| matches!(f, Frame::Binary(_)));
    let size: usize = frames
        .iter()
        .map(|f| match f {
            Frame::Text(t) => t.len() + 12,
            Frame::Binary(b) => b.len().div_ceil(3) * 4 + 14,
        })
        .sum();
    let mut out = BytesMut::with_capacity(size);
    let mut digits = itoa::Buffer::new();
    for frame in frames {
        match (frame, binary) {
            (Frame::Text(t), false) => {
                out.put_slice(digits.format(utf16_len(t.as_str())).as_bytes());
                out.put_u8(b':');
                out.put_slice(t.as_bytes());
            }
            (Frame::Binary(b), false) => {
                let encoded = base64_encode(b);
                out.put_slice(digits.format(encoded.len() + 2).as_bytes());
                out.put_slice(b":b4");
                out.put_slice(encoded.as_bytes());
            }
            (Frame::Text(t), true) => {
                put_binary_header(&mut out, 0, t.len(), &mut digits);
                out.put_slice(t.as_bytes());
            }
            (Frame::Binary(b), true) => {
                put_binary_header(&mut out, 1, b.len() + 1, &mut digits);
                out.put_u8(MESSAGE_TYPE);
                out.put_slice(b);
            }
        }
    }
    EncodedV3 {
        body: out.freeze(),
        binary,
    }
}

/// A frame as a v3 WebSocket message: binary frames carry the type byte in
/// front, or are sent as `b4<base64>` text to a client without binary support.
pub fn encode_ws_binary_v3(data: &[u8], supports_binary: bool) -> Frame {
    if supports_binary {
        let mut out = BytesMut::with_capacity(1 + data.len());
        out.put_u8(MESSAGE_TYPE);
        out.put_slice(data);
        Frame::Binary(out.freeze())
    } else {
        let mut text = String::with_capacity(2 + data.len().div_ceil(3) * 4);
        text.push_str("b4");
        text.push_str(&base64_encode(data));
        Frame::text(text)
    }
}

fn put_binary_header(out: &mut BytesMut, kind: u8, len: usize, digits: &mut itoa::Buffer) {
    out.put_u8(kind);
    for d in digits.format(len).bytes() {
        out.put_u8(d - b'0');
    }
    out.put_u8(0xFF);
}

/// The length of `s` as JavaScript counts it (UTF-16 code units).
fn utf16_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().map(char::len_utf16).sum()
    }
}

/// The bytes of `s` that make its first `units` UTF-16 code units. An error when
/// `s` is shorter, or the count ends inside a surrogate pair.
fn utf16_prefix_bytes(s: &str, units: usize) -> Result<usize, PacketError> {
    let mut counted = 0;
    for (i, c) in s.char_indices() {
        if counted == units {
            return Ok(i);
        }
        counted += c.len_utf16();
        if counted > units {
            return Err(PacketError::InvalidLength);
        }
    }
    if counted == units {
        Ok(s.len())
    } else {
        Err(PacketError::InvalidLength)
    }
}

/// A length prefix: ASCII digits only, at least one, bounded.
fn parse_length(digits: &[u8]) -> Result<usize, PacketError> {
    if digits.is_empty()
        || digits.len() > MAX_LENGTH_DIGITS
        || !digits.iter().all(u8::is_ascii_digit)
    {
        return Err(PacketError::InvalidLength);
    }
    Ok(digits
        .iter()
        .fold(0usize, |n, d| n * 10 + usize::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn msg(s: &'static str) -> Packet {
        Packet::Message(Bytes::from_static(s.as_bytes()))
    }

    fn text(s: &str) -> Result<Vec<Packet>, PacketError> {
        decode_text_payload_v3(Bytes::from(s.to_owned()))
    }

    #[test]
    fn decodes_text_payloads() {
        assert_eq!(text("6:4hello").unwrap(), vec![msg("hello")]);
        assert_eq!(
            text("6:4test16:4test26:4test3").unwrap(),
            vec![msg("test1"), msg("test2"), msg("test3")]
        );
        assert_eq!(
            text("6:4hello10:b4AQIDBA==").unwrap(),
            vec![
                msg("hello"),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4]))
            ]
        );
        assert_eq!(text("1:2").unwrap(), vec![Packet::Ping(Bytes::new())]);
        // UTF-16 lengths: `€` is one unit, `😀` two.
        assert_eq!(text("2:4€").unwrap(), vec![msg("€")]);
        assert_eq!(text("3:4😀1:6").unwrap(), vec![msg("😀"), Packet::Noop]);
        assert_eq!(text("0:1:6").unwrap(), vec![Packet::Noop], "empty skipped");
    }

    #[test]
    fn refuses_malformed_text_payloads() {
        for bad in [
            "abc", "", "6:4hell", ":4", "x:4", "2:4😀", "1:7", "3:b5AA", "+1:6", "1:61",
        ] {
            assert!(text(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(text("1:6x"), Err(PacketError::InvalidLength));
        assert_eq!(text("7:b4!!!!!"), Err(PacketError::InvalidBase64));
        assert_eq!(text("99999999999:4"), Err(PacketError::InvalidLength));
        assert_eq!(
            decode_text_payload_v3(Bytes::from_static(b"2:4\xff")),
            Err(PacketError::InvalidUtf8)
        );
    }

    #[test]
    fn binary_payload_matches_the_conformance_suite() {
        let frames = [
            Frame::message("hello"),
            Frame::Binary(Bytes::from_static(&[1, 2, 3, 4])),
        ];
        let out = encode_payload_v3(&frames, true);
        assert!(out.binary);
        assert_eq!(
            &out.body[..],
            &[0, 6, 255, 52, 104, 101, 108, 108, 111, 1, 5, 255, 4, 1, 2, 3, 4]
        );
        let out = encode_payload_v3(&frames, false);
        assert!(!out.binary);
        assert_eq!(&out.body[..], b"6:4hello10:b4AQIDBA==");
        let text_only = encode_payload_v3(&[Frame::message("€"), Frame::ping()], true);
        assert!(!text_only.binary, "no binary frame: text format");
        assert_eq!(&text_only.body[..], "2:4€1:2".as_bytes());
    }

    #[test]
    fn decodes_binary_payloads() {
        let body = Bytes::from_static(&[
            0, 6, 255, 52, 104, 101, 108, 108, 111, 1, 5, 255, 4, 1, 2, 3, 4, 0, 1, 255, b'2',
        ]);
        assert_eq!(
            decode_binary_payload_v3(body).unwrap(),
            vec![
                msg("hello"),
                Packet::Binary(Bytes::from_static(&[1, 2, 3, 4])),
                Packet::Ping(Bytes::new())
            ]
        );
        for bad in [
            &[][..],
            &[2, 1, 255, b'6'],
            &[0, 1, 255],
            &[0, 255, b'6'],
            &[0, 10, 255, b'6'],
            &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 1, 2, 255],
            &[1, 2, 255, 3, 1],
            &[0, 2, 255, b'4', 0xff],
            &[0, 1],
        ] {
            assert!(
                decode_binary_payload_v3(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?} must be refused"
            );
        }
    }

    #[test]
    fn websocket_binary_messages() {
        assert_eq!(
            decode_binary_message_v3(Bytes::from_static(&[4, 1, 2])).unwrap(),
            Packet::Binary(Bytes::from_static(&[1, 2]))
        );
        assert!(decode_binary_message_v3(Bytes::from_static(&[2, 1])).is_err());
        assert!(decode_binary_message_v3(Bytes::new()).is_err());
        assert_eq!(
            encode_ws_binary_v3(&[1, 2], true),
            Frame::Binary(Bytes::from_static(&[4, 1, 2]))
        );
        assert_eq!(encode_ws_binary_v3(&[1, 2], false), Frame::text("b4AQI="));
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            ".{0,30}".prop_map(|s| Frame::message(&s)),
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
        fn round_trip(frames in proptest::collection::vec(arb_frame(), 1..8), binary in any::<bool>()) {
            let out = encode_payload_v3(&frames, binary);
            let decoded = if out.binary {
                decode_binary_payload_v3(out.body).unwrap()
            } else {
                decode_text_payload_v3(out.body).unwrap()
            };
            let expected: Vec<Packet> = frames.iter().map(frame_to_packet).collect();
            prop_assert_eq!(decoded, expected);
        }

        #[test]
        fn never_panics(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = decode_text_payload_v3(Bytes::from(data.clone()));
            let _ = decode_binary_payload_v3(Bytes::from(data));
        }
    }
}
