//! msgpack → JSON text: a bounded, non-panicking reader of untrusted bytes.
//! `bin` values (and ext type 0, a JavaScript `ArrayBuffer` as notepack.io
//! sends it) become `{"_placeholder":true,"num":N}` plus an attachment (a
//! zero-copy slice of the message).

use bytes::Bytes;

use super::super::scan::write_json_string;
use super::super::{ParseError, MAX_DEPTH};

/// What one msgpack value is, once its header has been read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Head {
    Nil,
    Bool(bool),
    Uint(u64),
    Int(i64),
    Float(f64),
    /// UTF-8 checked later; the range is of the cursor's buffer.
    Str(usize, usize),
    Bin(usize, usize),
    Array(usize),
    Map(usize),
    /// JavaScript `undefined` (notepack.io's fixext 1, type 0).
    Undefined,
}

/// A cursor over one msgpack message.
pub(super) struct Reader<'a> {
    pub(super) buf: &'a Bytes,
    pub(super) pos: usize,
}

const BAD: ParseError = ParseError::InvalidMsgpack;

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a Bytes) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(super) fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ParseError> {
        let buf: &'a [u8] = self.buf;
        let end = self.pos.checked_add(n).ok_or(BAD)?;
        let s = buf.get(self.pos..end).ok_or(BAD)?;
        self.pos = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, ParseError> {
        Ok(self.take(1)?[0])
    }

    fn be(&mut self, n: usize) -> Result<u64, ParseError> {
        Ok(self
            .take(n)?
            .iter()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b)))
    }

    fn len(&mut self, n: usize) -> Result<usize, ParseError> {
        usize::try_from(self.be(n)?).map_err(|_| BAD)
    }

    /// A range of `n` bytes, checked to lie inside the buffer.
    fn span(&mut self, n: usize) -> Result<(usize, usize), ParseError> {
        let start = self.pos;
        self.take(n)?;
        Ok((start, self.pos))
    }

    /// A container count, bounded by the bytes left (each item takes one at least).
    fn count(&mut self, n: usize, per_item: usize) -> Result<usize, ParseError> {
        let c = self.len(n)?;
        let left = self.buf.len().saturating_sub(self.pos);
        if c.saturating_mul(per_item) > left {
            return Err(BAD);
        }
        Ok(c)
    }

    /// Read the header of the next value (and the payload of scalars).
    pub(super) fn head(&mut self) -> Result<Head, ParseError> {
        let m = self.u8()?;
        Ok(match m {
            0x00..=0x7f => Head::Uint(u64::from(m)),
            0x80..=0x8f => {
                let c = usize::from(m & 0x0f);
                self.fit(c, 2)?;
                Head::Map(c)
            }
            0x90..=0x9f => {
                let c = usize::from(m & 0x0f);
                self.fit(c, 1)?;
                Head::Array(c)
            }
            0xa0..=0xbf => {
                let (s, e) = self.span(usize::from(m & 0x1f))?;
                Head::Str(s, e)
            }
            0xc0 => Head::Nil,
            0xc2 => Head::Bool(false),
            0xc3 => Head::Bool(true),
            0xc4..=0xc6 => {
                let n = self.len(1 << (m - 0xc4))?;
                let (s, e) = self.span(n)?;
                Head::Bin(s, e)
            }
            0xc7..=0xc9 => {
                let n = self.len(1 << (m - 0xc7))?;
                if self.u8()? != 0 {
                    return Err(BAD); // only ext 0 (ArrayBuffer) is known
                }
                let (s, e) = self.span(n)?;
                Head::Bin(s, e)
            }
            0xca => Head::Float(f64::from(f32::from_bits(self.be(4)? as u32))),
            0xcb => Head::Float(f64::from_bits(self.be(8)?)),
            0xcc..=0xcf => Head::Uint(self.be(1 << (m - 0xcc))?),
            0xd0 => Head::Int(i64::from(self.u8()? as i8)),
            0xd1 => Head::Int(i64::from(self.be(2)? as u16 as i16)),
            0xd2 => Head::Int(i64::from(self.be(4)? as u32 as i32)),
            0xd3 => Head::Int(self.be(8)? as i64),
            0xd4 => {
                // fixext 1 type 0 is `undefined`; other exts (Dates…) are refused.
                if self.take(2)? != [0, 0] {
                    return Err(BAD);
                }
                Head::Undefined
            }
            0xd9..=0xdb => {
                let n = self.len(1 << (m - 0xd9))?;
                let (s, e) = self.span(n)?;
                Head::Str(s, e)
            }
            0xdc | 0xdd => Head::Array(self.count(if m == 0xdc { 2 } else { 4 }, 1)?),
            0xde | 0xdf => Head::Map(self.count(if m == 0xde { 2 } else { 4 }, 2)?),
            0xe0..=0xff => Head::Int(i64::from(m as i8)),
            // 0xc1 (never used), 0xd5..=0xd8 (fixext 2..16: Dates and unknown types)
            _ => return Err(BAD),
        })
    }

    fn fit(&self, c: usize, per_item: usize) -> Result<(), ParseError> {
        if c * per_item > self.buf.len().saturating_sub(self.pos) {
            return Err(BAD);
        }
        Ok(())
    }

    /// The UTF-8 text of a `Str` head.
    pub(super) fn str(&self, s: usize, e: usize) -> Result<&'a str, ParseError> {
        let buf: &'a [u8] = self.buf;
        std::str::from_utf8(buf.get(s..e).ok_or(BAD)?).map_err(|_| BAD)
    }

    /// Skip one value (checking it like [`Reader::json`] would).
    pub(super) fn skip(&mut self, depth: usize) -> Result<(), ParseError> {
        let head = self.head()?;
        self.skip_rest(head, depth)
    }

    pub(super) fn skip_rest(&mut self, head: Head, depth: usize) -> Result<(), ParseError> {
        match head {
            Head::Array(n) => {
                let depth = deeper(depth)?;
                for _ in 0..n {
                    self.skip(depth)?;
                }
            }
            Head::Map(n) => {
                let depth = deeper(depth)?;
                for _ in 0..n {
                    self.skip(depth)?;
                    self.skip(depth)?;
                }
            }
            Head::Str(s, e) => {
                self.str(s, e)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Append the JSON text of the next value to `out`; binaries go to
    /// `atts`. `depth` counts the containers around it.
    pub(super) fn json(
        &mut self,
        out: &mut String,
        atts: &mut Vec<Bytes>,
        depth: usize,
    ) -> Result<(), ParseError> {
        let head = self.head()?;
        self.json_of(head, out, atts, depth)
    }

    pub(super) fn json_of(
        &mut self,
        head: Head,
        out: &mut String,
        atts: &mut Vec<Bytes>,
        depth: usize,
    ) -> Result<(), ParseError> {
        match head {
            // `undefined` inside an array is `null` in JSON, as in JSON.stringify.
            Head::Nil | Head::Undefined => out.push_str("null"),
            Head::Bool(b) => out.push_str(if b { "true" } else { "false" }),
            Head::Uint(u) => out.push_str(itoa::Buffer::new().format(u)),
            Head::Int(i) => out.push_str(itoa::Buffer::new().format(i)),
            Head::Float(f) if f.is_finite() => out.push_str(ryu::Buffer::new().format_finite(f)),
            Head::Float(_) => out.push_str("null"),
            Head::Str(s, e) => write_json_string(out, self.str(s, e)?),
            Head::Bin(s, e) => {
                out.push_str("{\"_placeholder\":true,\"num\":");
                out.push_str(itoa::Buffer::new().format(atts.len()));
                out.push('}');
                atts.push(self.buf.slice(s..e));
            }
            Head::Array(n) => {
                let depth = deeper(depth)?;
                out.push('[');
                self.elements(n, out, atts, depth)?;
                out.push(']');
            }
            Head::Map(n) => {
                let depth = deeper(depth)?;
                out.push('{');
                let mut first = true;
                for _ in 0..n {
                    let key = self.head()?;
                    let value = self.head()?;
                    if value == Head::Undefined {
                        // JSON.stringify drops keys whose value is undefined.
                        self.skip_rest(key, depth)?;
                        continue;
                    }
                    if !first {
                        out.push(',');
                    }
                    first = false;
                    match key {
                        Head::Str(s, e) => write_json_string(out, self.str(s, e)?),
                        Head::Uint(u) => {
                            out.push('"');
                            out.push_str(itoa::Buffer::new().format(u));
                            out.push('"');
                        }
                        Head::Int(i) => {
                            out.push('"');
                            out.push_str(itoa::Buffer::new().format(i));
                            out.push('"');
                        }
                        _ => return Err(ParseError::InvalidPayload),
                    }
                    out.push(':');
                    self.json_of(value, out, atts, depth)?;
                }
                out.push('}');
            }
        }
        Ok(())
    }

    /// `n` comma-separated values (the inside of an array).
    pub(super) fn elements(
        &mut self,
        n: usize,
        out: &mut String,
        atts: &mut Vec<Bytes>,
        depth: usize,
    ) -> Result<(), ParseError> {
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            self.json(out, atts, depth)?;
        }
        Ok(())
    }
}

/// One container deeper, refused past [`MAX_DEPTH`].
fn deeper(depth: usize) -> Result<usize, ParseError> {
    let d = depth + 1;
    if d > MAX_DEPTH {
        return Err(ParseError::InvalidPayload);
    }
    Ok(d)
}
