//! Just enough of Engine.IO v4 / Socket.IO v5 text frames for the load
//! generator: the frames it sends are built by hand and the frames it reads
//! are classified without a JSON parser (the hot path only needs an ack id
//! and the send timestamp carried at the start of a string payload).

/// A text frame from the server, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// `0{...}`: the Engine.IO handshake.
    Open,
    /// `2`: a ping, to be answered with `3`.
    Ping,
    /// `40...`: the connect of namespace `/` was accepted.
    Connected,
    /// `44...`: the connect of namespace `/` was refused.
    ConnectError(&'a str),
    /// `42[...]` (or `42<id>[...]`): an event; `name` is the first element
    /// when it is a plain string, `rest` what follows it (`,args...]` or `]`).
    Event { name: &'a str, rest: &'a str },
    /// `43<id>[...]`: an acknowledgement with its arguments (`[...]`).
    Ack { id: u64, args: &'a str },
    /// `1`: the server closed the session.
    Close,
    /// Anything else (noop, messages of other namespaces, binary events).
    Other,
}

/// Classifies one text frame.
pub fn parse(text: &str) -> Frame<'_> {
    let b = text.as_bytes();
    match b.first() {
        Some(b'0') => Frame::Open,
        Some(b'1') => Frame::Close,
        Some(b'2') if b.len() == 1 => Frame::Ping,
        Some(b'4') => parse_socketio(&text[1..]),
        _ => Frame::Other,
    }
}

fn parse_socketio(p: &str) -> Frame<'_> {
    let b = p.as_bytes();
    match b.first() {
        // The default namespace only: another namespace starts with `/`.
        Some(b'0') if !p[1..].starts_with('/') => Frame::Connected,
        Some(b'4') if !p[1..].starts_with('/') => Frame::ConnectError(&p[1..]),
        Some(b'2') => {
            let body = skip_digits(&p[1..]);
            let Some(rest) = body.strip_prefix("[\"") else {
                return Frame::Other;
            };
            // Event names of this benchmark never contain escapes.
            match rest.find('"') {
                Some(end) if !rest[..end].contains('\\') => Frame::Event {
                    name: &rest[..end],
                    rest: &rest[end + 1..],
                },
                _ => Frame::Other,
            }
        }
        Some(b'3') => {
            let digits = &p[1..p.len() - skip_digits(&p[1..]).len()];
            match digits.parse() {
                Ok(id) => Frame::Ack {
                    id,
                    args: &p[1 + digits.len()..],
                },
                Err(_) => Frame::Other,
            }
        }
        _ => Frame::Other,
    }
}

fn skip_digits(s: &str) -> &str {
    s.trim_start_matches(|c: char| c.is_ascii_digit())
}

/// The timestamp at the start of the first string argument: `"<digits>...`
/// right after `[` (ack arguments) or `,` (event rest).
pub fn leading_timestamp(after: &str) -> Option<u64> {
    let s = after
        .strip_prefix('[')
        .or_else(|| after.strip_prefix(','))?
        .strip_prefix('"')?;
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    s[..end].parse().ok()
}

/// A string payload of exactly `size` bytes (at least 16) that starts with
/// the timestamp `ts` (µs, zero-padded to 16 digits) followed by `x`s.
pub fn payload(ts: u64, size: usize, out: &mut String) {
    use std::fmt::Write;
    let _ = write!(out, "{ts:016}");
    for _ in 16..size.max(16) {
        out.push('x');
    }
}

/// `42<id>["echo","<payload>"]`.
pub fn echo(id: u64, ts: u64, size: usize) -> String {
    let mut s = String::with_capacity(size + 32);
    s.push_str("42");
    s.push_str(&id.to_string());
    s.push_str("[\"echo\",\"");
    payload(ts, size, &mut s);
    s.push_str("\"]");
    s
}

/// `42["broadcast","<room>","<payload>"]`.
pub fn broadcast(room: &str, ts: u64, size: usize) -> String {
    let mut s = String::with_capacity(size + room.len() + 32);
    s.push_str("42[\"broadcast\",\"");
    s.push_str(room);
    s.push_str("\",\"");
    payload(ts, size, &mut s);
    s.push_str("\"]");
    s
}

/// `42["broadcast","<room>","<payload>"]` for the `rooms` scenario: the
/// payload is `<ts>.<room index>.<seq>.` padded with `x`s to `size` bytes
/// (longer if that does not fit), so a receiver can tell which room's
/// broadcast it got and whether it got it before.
pub fn room_broadcast(room: &str, index: usize, ts: u64, seq: u64, size: usize) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(size + room.len() + 48);
    s.push_str("42[\"broadcast\",\"");
    s.push_str(room);
    s.push_str("\",\"");
    let start = s.len();
    let _ = write!(s, "{ts:016}.{index}.{seq}.");
    while s.len() - start < size {
        s.push('x');
    }
    s.push_str("\"]");
    s
}

/// What a `rooms` delivery carries, from the `rest` of its `bcast` event:
/// (timestamp, room index, sequence number of the room's sender).
pub fn room_delivery(rest: &str) -> Option<(u64, usize, u64)> {
    let s = rest.strip_prefix(",\"")?;
    let mut parts = s.splitn(4, '.');
    let ts = parts.next()?.parse().ok()?;
    let room = parts.next()?.parse().ok()?;
    let seq = parts.next()?.parse().ok()?;
    parts.next()?;
    Some((ts, room, seq))
}

/// `42<id>["join","<room>"]`.
pub fn join(id: u64, room: &str) -> String {
    format!("42{id}[\"join\",\"{room}\"]")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_io_frames() {
        assert_eq!(
            parse(r#"0{"sid":"a","upgrades":[],"pingInterval":25000}"#),
            Frame::Open
        );
        assert_eq!(parse("2"), Frame::Ping);
        assert_eq!(parse("1"), Frame::Close);
        assert_eq!(parse("6"), Frame::Other);
        assert_eq!(parse("2probe"), Frame::Other);
    }

    #[test]
    fn connect_frames() {
        assert_eq!(parse(r#"40{"sid":"xyz"}"#), Frame::Connected);
        assert_eq!(parse("40/custom,{}"), Frame::Other);
        assert_eq!(
            parse(r#"44{"message":"nope"}"#),
            Frame::ConnectError(r#"{"message":"nope"}"#)
        );
    }

    #[test]
    fn events_and_acks() {
        assert_eq!(
            parse(r#"42["bcast","0000000000001234xx"]"#),
            Frame::Event {
                name: "bcast",
                rest: r#","0000000000001234xx"]"#
            }
        );
        assert_eq!(
            parse(r#"4217["echo"]"#),
            Frame::Event {
                name: "echo",
                rest: "]"
            }
        );
        assert_eq!(
            parse(r#"43123["0000000000000042xxxx"]"#),
            Frame::Ack {
                id: 123,
                args: r#"["0000000000000042xxxx"]"#
            }
        );
        assert_eq!(parse(r#"43["x"]"#), Frame::Other);
        assert_eq!(parse(r#"42[1,2]"#), Frame::Other);
        assert_eq!(parse("451-[\"bin\"]"), Frame::Other);
    }

    #[test]
    fn timestamps() {
        assert_eq!(leading_timestamp(r#"["0000000000000042xx"]"#), Some(42));
        assert_eq!(leading_timestamp(r#","0000000000001234"]"#), Some(1234));
        assert_eq!(leading_timestamp(r#"["ok"]"#), None);
        assert_eq!(leading_timestamp("]"), None);
    }

    #[test]
    fn built_frames_round_trip() {
        let e = echo(7, 99, 32);
        assert_eq!(e, format!("427[\"echo\",\"{:016}{}\"]", 99, "x".repeat(16)));
        // What a server acks: the same arguments.
        let ack = format!("437{}", &e[e.find(',').unwrap()..].replacen(',', "[", 1));
        match parse(&ack) {
            Frame::Ack { id: 7, args } => assert_eq!(leading_timestamp(args), Some(99)),
            other => panic!("{other:?}"),
        }
        let b = broadcast("r", 5, 20);
        assert_eq!(b, r#"42["broadcast","r","0000000000000005xxxx"]"#);
        assert_eq!(join(0, "r"), r#"420["join","r"]"#);
    }

    #[test]
    fn room_frames_round_trip() {
        let b = room_broadcast("r7", 7, 42, 3, 32);
        assert_eq!(
            b,
            r#"42["broadcast","r7","0000000000000042.7.3.xxxxxxxxxxx"]"#
        );
        // What the server delivers: `bcast` with the payload.
        let payload = &b[b.rfind(",\"").unwrap()..];
        let d = format!("42[\"bcast\"{payload}");
        match parse(&d) {
            Frame::Event {
                name: "bcast",
                rest,
            } => {
                assert_eq!(room_delivery(rest), Some((42, 7, 3)));
                assert_eq!(leading_timestamp(rest), Some(42));
            }
            other => panic!("{other:?}"),
        }
        // Too small a size: the payload is as long as it needs to be.
        let b = room_broadcast("r123", 123, 1, 123456, 16);
        assert!(b.contains("\"0000000000000001.123.123456.\""), "{b}");
        assert_eq!(room_delivery(r#","0000000000000042xx"]"#), None);
        assert_eq!(room_delivery(r#","0000000000000042.1.x."]"#), None);
        assert_eq!(room_delivery("]"), None);
    }
}
