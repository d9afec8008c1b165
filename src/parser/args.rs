//! [`Args`]: the arguments of an EVENT / ACK packet.

use bytes::{Bytes, BytesMut};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::binary;
use super::scan::Elements;
use super::ParseError;

/// The arguments of an event or acknowledgement, as Node has them: a list of
/// values, some of which may be binary.
///
/// # From Rust values to arguments
///
/// Everything that sends arguments (`emit`, `ack.send`, `emit_with_ack`, the
/// broadcast operators) takes an [`IntoArgs`](crate::IntoArgs), which follows
/// one rule:
///
/// | value | arguments | Node equivalent |
/// |---|---|---|
/// | `()` (or `&()`) | none | `emit("ev")` |
/// | a tuple `&(a, b)` | one per element | `emit("ev", a, b)` |
/// | `&(a,)` | one | `emit("ev", a)` |
/// | anything else: `&"x"`, `&42`, `&vec![1, 2, 3]`, `&json!([1, 2])`, `&my_struct` | exactly one | `emit("ev", x)` |
/// | an [`Args`] or `&Args` (e.g. received ones) | as they are, attachments included | `emit("ev", ...args)` |
///
/// A fixed-size array (`[1, 2, 3]`) is a tuple to serde, so it is spread too;
/// send a `Vec` or a slice (`&[1, 2, 3][..]`) for one list argument.
/// [`Binary`](super::Binary) values anywhere inside travel as binary attachments.
///
/// ```no_run
/// # use rsio::prelude::*;
/// # fn f(socket: Socket) -> Result<(), rsio::EmitError> {
/// socket.emit("ready", ())?; // socket.emit("ready")
/// socket.emit("greeting", "hello")?; // socket.emit("greeting", "hello")
/// socket.emit("list", &vec![1, 2, 3])?; // socket.emit("list", [1, 2, 3])
/// socket.emit("move", &(3, 4))?; // socket.emit("move", 3, 4)
/// socket.emit("file", &(Binary::from(vec![0u8, 1, 2]), "name.bin"))?; // a Buffer and a string
/// # Ok(()) }
/// ```
///
/// # Reading them
///
/// [`Args::get`] deserializes one argument, [`Args::decode`] all of them as a
/// tuple, and [`Args::nth`] takes one argument with its attachments, to send on.
/// Handlers usually take [`Data<T>`](crate::Data) instead.
///
/// # Representation
///
/// The JSON is kept as the exact text the peer sent (so key order and number
/// text survive a round trip), plus the binary attachments.
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
    pub(crate) fn from_raw(json_elements: Bytes, attachments: Vec<Bytes>) -> Args {
        Args {
            json: json_elements,
            attachments,
        }
    }

    /// Serialize `value` as arguments, by the rule in the [type docs](Args):
    /// `()` is none, a tuple (or fixed-size array) one per element, anything
    /// else (a `Vec` included) one. [`Binary`](super::Binary) values anywhere
    /// inside become attachments, replaced by `{"_placeholder":true,"num":N}`
    /// with `N` in document order from 0.
    pub fn new<T: Serialize + ?Sized>(value: &T) -> Result<Args, ParseError> {
        match shape::of(value) {
            shape::Shape::Unit => Ok(Args::empty()),
            shape::Shape::Other => Args::one(value),
            shape::Shape::Tuple => {
                let (text, attachments) = binary::collect(0, || serde_json::to_vec(value));
                let text = text?;
                let len = text.len();
                let is_array =
                    text.first() == Some(&b'[') && text.last() == Some(&b']') && len >= 2;
                let text = Bytes::from(text);
                let json = if is_array {
                    text.slice(1..len - 1)
                } else {
                    text
                };
                Ok(Args { json, attachments })
            }
        }
    }

    /// One argument per item, as Node's `emit(ev, ...items)`.
    pub fn spread<T: Serialize>(items: &[T]) -> Result<Args, ParseError> {
        let (text, attachments) = binary::collect(0, || serde_json::to_vec(items));
        let text = text?;
        // A slice always serializes as a JSON array: its elements are the arguments.
        let len = text.len();
        let json = Bytes::from(text).slice(1..len.saturating_sub(1).max(1));
        Ok(Args { json, attachments })
    }

    /// Serialize `value` as exactly one argument, even if it is a tuple.
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

    /// Argument `i` alone (no arguments if there is none), with the binary
    /// attachments it refers to: to send one received argument on unchanged.
    ///
    /// Its text is kept as received, unless it refers to only some of the
    /// attachments: then they are renumbered, and its JSON re-encoded.
    pub fn nth(&self, i: usize) -> Args {
        let Some(range) = Elements::new(&self.json)
            .nth(i)
            .filter(|r| r.start <= r.end && r.end <= self.json.len())
        else {
            return Args::empty();
        };
        let raw = self.json.slice(range.clone());
        if self.attachments.is_empty() || !may_refer(&raw) {
            return Args::from_raw(raw, Vec::new());
        }
        if !may_refer(&self.json[..range.start]) && !may_refer(&self.json[range.end..]) {
            // No other argument refers to an attachment: each one is this
            // argument's, at its own number (the usual case, kept without a copy).
            return Args::from_raw(raw, self.attachments.clone());
        }
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            return Args::from_raw(raw, Vec::new());
        };
        let mut used = Vec::new();
        let mut referenced = vec![false; self.attachments.len()];
        renumber(&mut value, &mut |n| match referenced.get_mut(n) {
            Some(seen) => {
                *seen = true;
                let at = used.iter().position(|&u| u == n).unwrap_or_else(|| {
                    used.push(n);
                    used.len() - 1
                });
                Some(at)
            }
            None => None,
        });
        if used.is_empty() {
            return Args::from_raw(raw, Vec::new());
        }
        if referenced.iter().all(|&r| r) {
            // Every attachment, each at its own number: the text stands.
            return Args::from_raw(raw, self.attachments.clone());
        }
        let attachments = used.iter().map(|&n| self.attachments[n].clone()).collect();
        let text = serde_json::to_vec(&value).unwrap_or_else(|_| raw.to_vec());
        Args::from_raw(Bytes::from(text), attachments)
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

/// Whether JSON text may hold a placeholder: it names one, or has escapes
/// (which could spell the name).
fn may_refer(json: &[u8]) -> bool {
    json.contains(&b'\\') || json.windows(12).any(|w| w == b"_placeholder")
}

/// Gives each placeholder of `value` the number `map` returns for its own
/// (placeholders `map` refuses are left as they are).
fn renumber(value: &mut serde_json::Value, map: &mut impl FnMut(usize) -> Option<usize>) {
    use serde_json::Value;
    match value {
        Value::Array(items) => items.iter_mut().for_each(|v| renumber(v, map)),
        Value::Object(obj) => {
            let is_placeholder =
                obj.len() == 2 && obj.get("_placeholder") == Some(&Value::Bool(true));
            let num = obj.get("num").and_then(binary::placeholder_index);
            match (is_placeholder, num) {
                (true, Some(n)) => {
                    if let Some(new) = map(n) {
                        obj.insert("num".into(), Value::from(new));
                    }
                }
                _ => obj.values_mut().for_each(|v| renumber(v, map)),
            }
        }
        _ => {}
    }
}

/// What a value is to serde at its top level, which decides how it becomes arguments.
mod shape {
    use serde::ser::{Impossible, Serialize, Serializer};

    pub(super) enum Shape {
        /// `()`: no argument.
        Unit,
        /// A tuple or fixed-size array: one argument per element.
        Tuple,
        /// Anything else: one argument.
        Other,
    }

    /// Stops serialization at the first call, having noted which it was.
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("shape probe")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::ser::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }

    struct Probe<'a>(&'a mut Shape);

    macro_rules! other {
        ($($name:ident($($arg:ty),*)),* $(,)?) => {
            $(fn $name(self, $(_: $arg),*) -> Result<(), Stop> {
                Err(Stop)
            })*
        };
    }

    impl Serializer for Probe<'_> {
        type Ok = ();
        type Error = Stop;
        type SerializeSeq = Impossible<(), Stop>;
        type SerializeTuple = Impossible<(), Stop>;
        type SerializeTupleStruct = Impossible<(), Stop>;
        type SerializeTupleVariant = Impossible<(), Stop>;
        type SerializeMap = Impossible<(), Stop>;
        type SerializeStruct = Impossible<(), Stop>;
        type SerializeStructVariant = Impossible<(), Stop>;

        fn serialize_unit(self) -> Result<(), Stop> {
            *self.0 = Shape::Unit;
            Err(Stop)
        }

        fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, Stop> {
            *self.0 = Shape::Tuple;
            Err(Stop)
        }

        other!(
            serialize_bool(bool),
            serialize_i8(i8),
            serialize_i16(i16),
            serialize_i32(i32),
            serialize_i64(i64),
            serialize_i128(i128),
            serialize_u8(u8),
            serialize_u16(u16),
            serialize_u32(u32),
            serialize_u64(u64),
            serialize_u128(u128),
            serialize_f32(f32),
            serialize_f64(f64),
            serialize_char(char),
            serialize_str(&str),
            serialize_bytes(&[u8]),
            serialize_none(),
            serialize_unit_struct(&'static str),
            serialize_unit_variant(&'static str, u32, &'static str),
        );

        fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result<(), Stop> {
            Err(Stop)
        }
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: &T,
        ) -> Result<(), Stop> {
            Err(Stop)
        }
        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result<(), Stop> {
            Err(Stop)
        }
        fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, Stop> {
            Err(Stop)
        }
        fn serialize_tuple_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleStruct, Stop> {
            Err(Stop)
        }
        fn serialize_tuple_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeTupleVariant, Stop> {
            Err(Stop)
        }
        fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, Stop> {
            Err(Stop)
        }
        fn serialize_struct(
            self,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStruct, Stop> {
            Err(Stop)
        }
        fn serialize_struct_variant(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: usize,
        ) -> Result<Self::SerializeStructVariant, Stop> {
            Err(Stop)
        }
    }

    /// The shape of `value`: one call into its `Serialize`, stopped at once.
    pub(super) fn of<T: Serialize + ?Sized>(value: &T) -> Shape {
        let mut shape = Shape::Other;
        let _ = value.serialize(Probe(&mut shape));
        shape
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

    /// Node's rule: `()` is no argument, a tuple one per element, anything
    /// else (a `Vec`, a JSON array) exactly one.
    #[test]
    fn new_spreads_tuples_only() {
        assert_eq!(text(&Args::new(&(1, "2", [3])).unwrap()), r#"1,"2",[3]"#);
        assert_eq!(text(&Args::new(&vec![1, 2]).unwrap()), "[1,2]");
        assert_eq!(Args::new(&vec![1, 2]).unwrap().len(), 1);
        assert_eq!(text(&Args::new(&Vec::<u8>::new()).unwrap()), "[]");
        assert_eq!(text(&Args::new(&json!([1, 2])).unwrap()), "[1,2]");
        assert_eq!(text(&Args::new(&[1, 2][..]).unwrap()), "[1,2]");
        assert_eq!(text(&Args::new(&[1, 2]).unwrap()), "1,2");
        assert_eq!(text(&Args::new(&(vec![1],)).unwrap()), "[1]");
        assert_eq!(text(&Args::new("x").unwrap()), r#""x""#);
        assert_eq!(text(&Args::new(&json!({"a":1})).unwrap()), r#"{"a":1}"#);
        assert!(Args::new(&()).unwrap().is_empty());
        assert_eq!(text(&Args::spread(&[1, 2]).unwrap()), "1,2");
        assert!(Args::spread::<u8>(&[]).unwrap().is_empty());
        assert_eq!(text(&Args::new(&None::<u8>).unwrap()), "null");
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

    /// `nth` keeps the attachments the argument refers to, renumbered from 0.
    #[test]
    fn nth_keeps_its_attachments() {
        let b = |s: &'static [u8]| Binary(Bytes::from_static(s));
        let a = Args::new(&(
            b"one",
            json!({"k": 1}),
            (b(b"two"), "x", vec![b(b"three")]),
            b(b"one"),
        ))
        .unwrap();
        assert_eq!(a.attachments().len(), 3);
        let first = a.nth(0);
        assert_eq!(first.json(), a.get_raw(0).unwrap());
        assert!(!first.has_attachments());
        assert_eq!(text(&a.nth(1)), r#"{"k":1}"#);
        let third = a.nth(2);
        assert_eq!(
            text(&third),
            r#"[{"_placeholder":true,"num":0},"x",[{"_placeholder":true,"num":1}]]"#
        );
        assert_eq!(third.attachments(), &[&b"two"[..], &b"three"[..]]);
        let (two, x, three): (Binary, String, Vec<Binary>) = third.get(0).unwrap();
        assert_eq!(
            (&two.0[..], x.as_str(), &three[0].0[..]),
            (&b"two"[..], "x", &b"three"[..])
        );
        let last = a.nth(3);
        assert_eq!(text(&last), r#"{"_placeholder":true,"num":0}"#);
        assert_eq!(last.attachments(), &[&b"one"[..]]);
        assert!(a.nth(4).is_empty());
        let whole = Args::new(&(b(b"z"),)).unwrap();
        assert_eq!(whole.nth(0), whole);
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
