//! JSON text → msgpack, streaming through serde_json (no JSON tree).
//! Placeholders `{"_placeholder":true,"num":N}` whose `N` names one of the
//! attachments become msgpack `bin` values.

use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use super::super::scan::Elements;
use super::super::ParseError;

/// Largest magnitude (2^63) below which an integral float is written as an integer.
const INT_RANGE: f64 = 9_223_372_036_854_775_808.0;

pub(super) fn put_uint(out: &mut Vec<u8>, u: u64) {
    // Same choice of width as notepack.io.
    if u < 0x80 {
        out.push(u as u8);
    } else if u < 0x100 {
        out.extend_from_slice(&[0xcc, u as u8]);
    } else if u < 0x1_0000 {
        out.push(0xcd);
        out.extend_from_slice(&(u as u16).to_be_bytes());
    } else if u < 0x1_0000_0000 {
        out.push(0xce);
        out.extend_from_slice(&(u as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&u.to_be_bytes());
    }
}

pub(super) fn put_int(out: &mut Vec<u8>, i: i64) {
    if i >= 0 {
        put_uint(out, i.unsigned_abs());
    } else if i >= -0x20 {
        out.push(i as u8);
    } else if i >= -0x80 {
        out.extend_from_slice(&[0xd0, i as u8]);
    } else if i >= -0x8000 {
        out.push(0xd1);
        out.extend_from_slice(&(i as i16).to_be_bytes());
    } else if i >= -0x8000_0000 {
        out.push(0xd2);
        out.extend_from_slice(&(i as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&i.to_be_bytes());
    }
}

fn put_f64(out: &mut Vec<u8>, f: f64) {
    // JavaScript has one number type: notepack.io writes integral values as integers.
    if f.is_finite() && f.fract() == 0.0 && f.abs() < INT_RANGE {
        put_int(out, f as i64);
    } else {
        out.push(0xcb);
        out.extend_from_slice(&f.to_be_bytes());
    }
}

/// A header with a 1-byte fix form, or 8/16/32-bit length forms.
fn header(len: usize, fix: u8, fix_max: usize, m8: Option<u8>, m16: u8) -> ([u8; 5], usize) {
    let mut h = [0u8; 5];
    if len <= fix_max {
        h[0] = fix | len as u8;
        (h, 1)
    } else if let (Some(m), true) = (m8, len < 0x100) {
        h[0] = m;
        h[1] = len as u8;
        (h, 2)
    } else if len < 0x1_0000 {
        h[0] = m16;
        h[1..3].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 3)
    } else {
        h[0] = m16 + 1;
        h[1..5].copy_from_slice(&(len as u32).to_be_bytes());
        (h, 5)
    }
}

pub(super) fn put_str(out: &mut Vec<u8>, s: &str) {
    let (h, n) = header(s.len(), 0xa0, 31, Some(0xd9), 0xda);
    out.extend_from_slice(&h[..n]);
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn put_bin(out: &mut Vec<u8>, b: &[u8]) {
    let len = b.len();
    if len < 0x100 {
        out.extend_from_slice(&[0xc4, len as u8]);
    } else if len < 0x1_0000 {
        out.push(0xc5);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xc6);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
    out.extend_from_slice(b);
}

pub(super) fn array_header(len: usize) -> ([u8; 5], usize) {
    header(len, 0x90, 15, None, 0xdc)
}

pub(super) fn map_header(len: usize) -> ([u8; 5], usize) {
    header(len, 0x80, 15, None, 0xde)
}

/// Replace the 1-byte header reserved at `at` with the real one.
pub(super) fn fix_header(out: &mut Vec<u8>, at: usize, (h, n): ([u8; 5], usize)) {
    if n == 1 {
        out[at] = h[0];
    } else {
        out.splice(at..at + 1, h[..n].iter().copied());
    }
}

/// Write the comma-separated JSON values `json` as msgpack values; returns
/// how many there were.
pub(super) fn json_elements(
    json: &[u8],
    atts: &[Bytes],
    out: &mut Vec<u8>,
) -> Result<usize, ParseError> {
    let mut n = 0;
    for range in Elements::new(json) {
        json_value(json.get(range).unwrap_or_default(), atts, out)?;
        n += 1;
    }
    Ok(n)
}

/// Write one JSON value as msgpack.
pub(super) fn json_value(json: &[u8], atts: &[Bytes], out: &mut Vec<u8>) -> Result<(), ParseError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    Tx { out, atts }.deserialize(&mut de)?;
    de.end()?;
    Ok(())
}

struct Tx<'a> {
    out: &'a mut Vec<u8>,
    atts: &'a [Bytes],
}

impl<'de> DeserializeSeed<'de> for Tx<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

/// What a map key was, for placeholder detection.
#[derive(PartialEq)]
enum Key {
    Placeholder,
    Num,
    Other,
}

struct KeyTx<'a>(&'a mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for KeyTx<'_> {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyTx<'_> {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Key, E> {
        put_str(self.0, s);
        Ok(match s {
            "_placeholder" => Key::Placeholder,
            "num" => Key::Num,
            _ => Key::Other,
        })
    }
}

/// The unsigned integer msgpack wrote in `b`, if that is what it is.
fn read_uint(b: &[u8]) -> Option<u64> {
    match b {
        [m @ 0x00..=0x7f] => Some(u64::from(*m)),
        [0xcc, rest @ ..] | [0xcd, rest @ ..] | [0xce, rest @ ..] | [0xcf, rest @ ..] => {
            Some(rest.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
        }
        _ => None,
    }
}

impl<'de> Visitor<'de> for Tx<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.out.push(0xc0);
        Ok(())
    }
    fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<(), E> {
        self.out.push(if b { 0xc3 } else { 0xc2 });
        Ok(())
    }
    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<(), E> {
        put_uint(self.out, u);
        Ok(())
    }
    fn visit_i64<E: serde::de::Error>(self, i: i64) -> Result<(), E> {
        put_int(self.out, i);
        Ok(())
    }
    fn visit_f64<E: serde::de::Error>(self, f: f64) -> Result<(), E> {
        put_f64(self.out, f);
        Ok(())
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<(), E> {
        put_str(self.out, s);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.out.len();
        self.out.push(0);
        let mut n = 0usize;
        while seq
            .next_element_seed(Tx {
                out: self.out,
                atts: self.atts,
            })?
            .is_some()
        {
            n += 1;
        }
        fix_header(self.out, at, array_header(n));
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.out.len();
        self.out.push(0);
        let mut n = 0usize;
        let (mut placeholder, mut num) = (false, None);
        while let Some(key) = map.next_key_seed(KeyTx(self.out))? {
            let value_at = self.out.len();
            map.next_value_seed(Tx {
                out: self.out,
                atts: self.atts,
            })?;
            let value = self.out.get(value_at..).unwrap_or_default();
            match key {
                Key::Placeholder => placeholder = value == [0xc3],
                Key::Num => num = read_uint(value),
                Key::Other => {}
            }
            n += 1;
        }
        let att = num
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.atts.get(i));
        match att {
            Some(bin) if placeholder && n == 2 => {
                self.out.truncate(at);
                put_bin(self.out, bin);
            }
            _ => fix_header(self.out, at, map_header(n)),
        }
        Ok(())
    }
}
