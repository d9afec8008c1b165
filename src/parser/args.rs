//! [`Args`]: the arguments of an EVENT / ACK packet.

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::binary;
use super::scan::Elements;
use super::ParseError;

/// JSON arguments of an EVENT/ACK, kept as the exact text the peer sent (so
/// key order and number text survive a round trip), plus binary attachments.
///
/// `json` holds the comma-separated JSON values *without* the surrounding
/// `[ ]` (possibly empty). Placeholders `{"_placeholder":true,"num":N}` in it
/// refer to `attachments[N]`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Args {
    json: Bytes,
    attachments: Vec<Bytes>,
}

impl Args {
    /// No arguments.
    pub fn empty() -> Args {
        Args::default()
    }

    /// Wrap already-validated parts (trusted, internal use): `json_elements`
    /// must be a comma-separated list of valid JSON values in UTF-8 (or
    /// empty), whose placeholders refer to `attachments`.
    pub fn from_raw(json_elements: Bytes, attachments: Vec<Bytes>) -> Args {
        Args {
            json: json_elements,
            attachments,
        }
    }

    /// Serialize `value` as arguments: a tuple, array, `Vec` (also a
    /// `serde_json::Value::Array`) or any other
    /// value serialized as a JSON array gives one argument per element
    /// (`()`, `None` and other unit values serialize as `null`, i.e. one
    /// `null` argument: use [`Args::empty`] for none); any other value is one
    /// argument. [`Binary`](super::Binary) values anywhere inside become
    /// attachments, replaced by `{"_placeholder":true,"num":N}` with `N` in
    /// document order from 0.
    pub fn new<T: Serialize + ?Sized>(value: &T) -> Result<Args, ParseError> {
        let (text, attachments) = binary::collect(0, || serde_json::to_vec(value));
        let text = text?;
        let len = text.len();
        let is_array = text.first() == Some(&b'[') && text.last() == Some(&b']') && len >= 2;
        let text = Bytes::from(text);
        let json = if is_array {
            text.slice(1..len - 1)
        } else {
            text
        };
        Ok(Args { json, attachments })
    }

    /// Serialize `value` as exactly one argument, even if it is a sequence.
    pub fn one<T: Serialize + ?Sized>(value: &T) -> Result<Args, ParseError> {
        let (text, attachments) = binary::collect(0, || serde_json::to_vec(value));
        Ok(Args {
            json: Bytes::from(text?),
            attachments,
        })
    }

    /// Append one argument (e.g. a connection-state-recovery offset). Its
    /// [`Binary`](super::Binary) values are numbered after the existing
    /// attachments.
    pub fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ParseError> {
        let (text, extra) = binary::collect(self.attachments.len(), || serde_json::to_vec(value));
        let text = text?;
        if self.json.is_empty() {
            self.json = Bytes::from(text);
        } else {
            let mut buf = BytesMut::with_capacity(self.json.len() + 1 + text.len());
            buf.extend_from_slice(&self.json);
            buf.extend_from_slice(b",");
            buf.extend_from_slice(&text);
            self.json = buf.freeze();
        }
        self.attachments.extend(extra);
        Ok(())
    }

    /// The comma-separated JSON text of the arguments (no `[ ]`).
    pub fn json(&self) -> &[u8] {
        &self.json
    }

    /// The JSON text as a shared buffer.
    pub fn json_bytes(&self) -> &Bytes {
        &self.json
    }

    /// Binary attachments, in placeholder order.
    pub fn attachments(&self) -> &[Bytes] {
        &self.attachments
    }

    /// Whether there are binary attachments (the packet is then sent as
    /// BINARY_EVENT / BINARY_ACK).
    pub fn has_attachments(&self) -> bool {
        !self.attachments.is_empty()
    }

    /// Split into the JSON text and the attachments.
    pub fn into_parts(self) -> (Bytes, Vec<Bytes>) {
        (self.json, self.attachments)
    }

    /// Number of top-level arguments (scans the text).
    pub fn len(&self) -> usize {
        Elements::new(&self.json).count()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        Elements::new(&self.json).next().is_none()
    }

    /// The exact JSON text of argument `i`, if any.
    pub fn get_raw(&self, i: usize) -> Option<Bytes> {
        let range = Elements::new(&self.json).nth(i)?;
        if range.end > self.json.len() || range.start > range.end {
            return None;
        }
        Some(self.json.slice(range))
    }

    /// Deserialize all arguments as one sequence type (tuple, `Vec`, array,
    /// tuple struct…). Placeholders resolve to [`Binary`](super::Binary).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ParseError> {
        let mut buf = Vec::with_capacity(self.json.len() + 2);
        buf.push(b'[');
        buf.extend_from_slice(&self.json);
        buf.push(b']');
        binary::provide(&self.attachments, || serde_json::from_slice(&buf)).map_err(Into::into)
    }

    /// Deserialize argument `i` alone. A missing argument deserializes from
    /// `null` (so `Option<T>` gives `None`).
    pub fn get<T: DeserializeOwned>(&self, i: usize) -> Result<T, ParseError> {
        let raw = self
            .get_raw(i)
            .unwrap_or_else(|| Bytes::from_static(b"null"));
        binary::provide(&self.attachments, || serde_json::from_slice(&raw)).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Binary;
    use super::*;
    use serde_json::{json, Value};

    fn text(a: &Args) -> &str {
        std::str::from_utf8(a.json()).unwrap()
    }

    #[test]
    fn new_sequences_and_single_values() {
        assert_eq!(text(&Args::new(&(1, "2", [3])).unwrap()), r#"1,"2",[3]"#);
        assert_eq!(text(&Args::new(&vec![1, 2]).unwrap()), "1,2");
        assert_eq!(text(&Args::new(&Vec::<u8>::new()).unwrap()), "");
        assert_eq!(text(&Args::new("x").unwrap()), r#""x""#);
        assert_eq!(text(&Args::new(&json!({"a":1})).unwrap()), r#"{"a":1}"#);
        assert_eq!(text(&Args::new(&()).unwrap()), "null");
        assert_eq!(text(&Args::one(&(1, 2)).unwrap()), "[1,2]");
        assert_eq!(Args::new(&(1, 2, 3)).unwrap().len(), 3);
        assert_eq!(Args::one(&(1, 2, 3)).unwrap().len(), 1);
        assert!(Args::empty().is_empty());
        assert_eq!(Args::empty().len(), 0);
    }

    #[test]
    fn binary_placeholders_in_document_order() {
        let a = Args::new(&(
            "a",
            Binary(Bytes::from_static(b"one")),
            vec![Binary(Bytes::from_static(b"two"))],
        ))
        .unwrap();
        assert_eq!(
            text(&a),
            r#""a",{"_placeholder":true,"num":0},[{"_placeholder":true,"num":1}]"#
        );
        assert_eq!(a.attachments(), &[&b"one"[..], &b"two"[..]]);
        let (s, b0, b1): (String, Binary, Vec<Binary>) = a.decode().unwrap();
        assert_eq!(s, "a");
        assert_eq!(b0.0, Bytes::from_static(b"one"));
        assert_eq!(b1, vec![Binary(Bytes::from_static(b"two"))]);
        let b: Binary = a.get(1).unwrap();
        assert_eq!(b.0, Bytes::from_static(b"one"));
    }

    #[test]
    fn push_numbers_after_existing_attachments() {
        let mut a = Args::new(&(Binary(Bytes::from_static(b"x")),)).unwrap();
        a.push(&json!({"k": 1})).unwrap();
        a.push(&Binary(Bytes::from_static(b"y"))).unwrap();
        a.push("offset").unwrap();
        assert_eq!(
            text(&a),
            r#"{"_placeholder":true,"num":0},{"k":1},{"_placeholder":true,"num":1},"offset""#
        );
        assert_eq!(a.attachments().len(), 2);
        let mut e = Args::empty();
        e.push(&[1, 2]).unwrap();
        assert_eq!(text(&e), "[1,2]");
        assert_eq!(e.len(), 1);
    }

    #[test]
    fn get_and_decode() {
        let a = Args::from_raw(Bytes::from_static(br#"1, "2" ,{"3":[true]}"#), vec![]);
        assert_eq!(a.len(), 3);
        assert_eq!(a.get::<i64>(0).unwrap(), 1);
        assert_eq!(a.get::<String>(1).unwrap(), "2");
        assert_eq!(a.get::<Value>(2).unwrap(), json!({"3":[true]}));
        assert_eq!(a.get::<Option<u8>>(3).unwrap(), None);
        assert!(a.get::<u8>(3).is_err());
        assert_eq!(a.get_raw(1).unwrap(), Bytes::from_static(br#""2""#));
        let (n, s, v): (i64, String, Value) = a.decode().unwrap();
        assert_eq!((n, s.as_str(), v), (1, "2", json!({"3":[true]})));
        assert!(matches!(a.decode::<(i64,)>(), Err(ParseError::Json(_))));
    }

    #[test]
    fn missing_attachment_is_an_error() {
        let a = Args::from_raw(
            Bytes::from_static(br#"{"_placeholder":true,"num":1}"#),
            vec![],
        );
        assert!(a.get::<Binary>(0).is_err());
        assert_eq!(
            a.get::<Value>(0).unwrap(),
            json!({"_placeholder":true,"num":1})
        );
    }
}
