//! `--parser msgpack`: the Socket.IO packets of socket.io-msgpack-parser
//! (one binary message, a msgpack map `{type, data, nsp, id?}`).
//!
//! The load generator builds and classifies text frames (frame.rs); with
//! msgpack they are converted at the socket: a built text packet becomes its
//! msgpack message, a received msgpack message the text packet it stands
//! for. That costs the load generator one conversion per message, the same
//! for every server it measures. Only the shapes this benchmark uses are
//! handled: `4<type>[<id>][<plain strings>]`.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio_tungstenite::tungstenite::Message;

static ON: AtomicBool = AtomicBool::new(false);

/// Speak msgpack from now on.
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// A Socket.IO text packet (`4…`) to send, in the format in use.
/// Compressed when `--deflate` says so and it is large enough.
pub fn message(text: String) -> Message {
    let msg = if !ON.load(Ordering::Relaxed) {
        Message::text(text)
    } else {
        match encode(&text) {
            Some(bin) => Message::binary(bin),
            None => Message::text(text),
        }
    };
    crate::deflate::outgoing(msg)
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    if n < 32 {
        out.push(0xa0 | n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n < 0x1_0000 {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

/// `4<type>[<id>][["a","b"]]` → `{type, data?, nsp:"/", id?}`.
fn encode(text: &str) -> Option<Vec<u8>> {
    let rest = text.strip_prefix('4')?;
    let ty = rest.bytes().next()?.checked_sub(b'0')?;
    let rest = &rest[1..];
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let id: Option<u64> = rest[..digits].parse().ok();
    let body = &rest[digits..];
    let items: Vec<&str> = match body.strip_prefix("[\"").and_then(|b| b.strip_suffix("\"]")) {
        Some(inner) => inner.split("\",\"").collect(),
        None if body.is_empty() => Vec::new(),
        None => return None,
    };
    let mut out = Vec::with_capacity(text.len() + 32);
    let fields = 2 + u8::from(body.starts_with('[')) + u8::from(id.is_some());
    out.push(0x80 | fields);
    put_str(&mut out, "type");
    out.push(ty);
    if body.starts_with('[') {
        put_str(&mut out, "data");
        out.push(0x90 | u8::try_from(items.len()).ok().filter(|&n| n < 16)?);
        for s in items {
            put_str(&mut out, s);
        }
    }
    put_str(&mut out, "nsp");
    put_str(&mut out, "/");
    if let Some(id) = id {
        put_str(&mut out, "id");
        out.push(0xcf);
        out.extend_from_slice(&id.to_be_bytes());
    }
    Some(out)
}

struct Reader<'a>(&'a [u8]);

enum Value<'a> {
    Uint(u64),
    Str(&'a str),
    Array(usize),
    Map(usize),
    Other,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = b;
        Some(a)
    }

    fn be(&mut self, n: usize) -> Option<u64> {
        Some(
            self.take(n)?
                .iter()
                .fold(0, |a, &b| (a << 8) | u64::from(b)),
        )
    }

    fn next(&mut self) -> Option<Value<'a>> {
        let m = *self.take(1)?.first()?;
        let str_len = match m {
            0x00..=0x7f => return Some(Value::Uint(u64::from(m))),
            0x80..=0x8f => return Some(Value::Map(usize::from(m & 0x0f))),
            0x90..=0x9f => return Some(Value::Array(usize::from(m & 0x0f))),
            0xdc => return Some(Value::Array(self.be(2)? as usize)),
            0xcc..=0xcf => return Some(Value::Uint(self.be(1 << (m - 0xcc))?)),
            0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9..=0xdb => self.be(1 << (m - 0xd9))? as usize,
            0xc0 | 0xc2 | 0xc3 => return Some(Value::Other),
            // `undefined` (Node's CONNECT answer has `pid: undefined`).
            0xd4 => {
                self.take(2)?;
                return Some(Value::Other);
            }
            _ => return None, // nothing else in this benchmark's packets
        };
        std::str::from_utf8(self.take(str_len)?)
            .ok()
            .map(Value::Str)
    }

    /// Skips the contents of a container (`n` values).
    fn skip(&mut self, n: usize) -> Option<()> {
        for _ in 0..n {
            match self.next()? {
                Value::Array(k) => self.skip(k)?,
                Value::Map(k) => self.skip(k * 2)?,
                _ => {}
            }
        }
        Some(())
    }
}

/// A received msgpack packet as the text packet it stands for.
pub fn to_text(bin: &[u8]) -> Option<String> {
    let mut r = Reader(bin);
    let m = *r.take(1)?.first()?;
    if !(0x80..=0x8f).contains(&m) {
        return None;
    }
    let (mut ty, mut id, mut data, mut nsp) = (None, None, Vec::new(), "/");
    for _ in 0..(m & 0x0f) {
        let Value::Str(key) = r.next()? else {
            return None;
        };
        match (key, r.next()?) {
            ("type", Value::Uint(t)) => ty = Some(t),
            ("id", Value::Uint(i)) => id = Some(i),
            ("nsp", Value::Str(s)) => nsp = s,
            ("data", Value::Array(n)) => {
                for _ in 0..n {
                    match r.next()? {
                        Value::Str(s) => data.push(s),
                        _ => return None,
                    }
                }
            }
            // A CONNECT / CONNECT_ERROR object (`{sid}`, `{message}`): not needed.
            ("data", Value::Map(n)) => r.skip(n * 2)?,
            ("data", _) => {}
            _ => return None,
        }
    }
    let mut text = String::with_capacity(bin.len() + 16);
    text.push('4');
    text.push(char::from(
        b'0' + u8::try_from(ty?).ok().filter(|&t| t < 7)?,
    ));
    if nsp != "/" {
        text.push_str(nsp);
        text.push(',');
    }
    if let Some(id) = id {
        text.push_str(&id.to_string());
    }
    match ty? {
        0 | 4 => text.push_str("{}"),
        _ => {
            text.push('[');
            for (i, s) in data.iter().enumerate() {
                if i > 0 {
                    text.push(',');
                }
                text.push('"');
                text.push_str(s);
                text.push('"');
            }
            text.push(']');
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_packets_round_trip_through_msgpack() {
        for t in [
            "40",
            r#"427["echo","0000000000000042xx"]"#,
            r#"42["broadcast","r","0000000000000005xxxx"]"#,
            r#"420["join","r"]"#,
        ] {
            let bin = encode(t).unwrap();
            let back = to_text(&bin).unwrap();
            let expected = if t == "40" { "40{}" } else { t };
            assert_eq!(back, expected);
        }
        // What socket.io-msgpack-parser sends for {type:3,data:["ok"],nsp:"/",id:5}.
        let ack = [
            0x84, 0xa4, b't', b'y', b'p', b'e', 3, 0xa4, b'd', b'a', b't', b'a', 0x91, 0xa2, b'o',
            b'k', 0xa3, b'n', b's', b'p', 0xa1, b'/', 0xa2, b'i', b'd', 5,
        ];
        assert_eq!(to_text(&ack).unwrap(), r#"435["ok"]"#);
        // The CONNECT answer {type:0,data:{sid:"a"},nsp:"/"}.
        let connect = [
            0x83, 0xa4, b't', b'y', b'p', b'e', 0, 0xa4, b'd', b'a', b't', b'a', 0x81, 0xa3, b's',
            b'i', b'd', 0xa1, b'a', 0xa3, b'n', b's', b'p', 0xa1, b'/',
        ];
        assert_eq!(to_text(&connect).unwrap(), "40{}");
        // Node's: {type:0,data:{sid:"a",pid:undefined},nsp:"/"}.
        let node = [
            0x83, 0xa4, b't', b'y', b'p', b'e', 0, 0xa4, b'd', b'a', b't', b'a', 0x82, 0xa3, b's',
            b'i', b'd', 0xa1, b'a', 0xa3, b'p', b'i', b'd', 0xd4, 0, 0, 0xa3, b'n', b's', b'p',
            0xa1, b'/',
        ];
        assert_eq!(to_text(&node).unwrap(), "40{}");
    }
}
