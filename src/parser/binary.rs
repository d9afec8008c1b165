//! [`Binary`]: a binary value inside event/ack arguments.
//!
//! serde has no notion of "out-of-band" data, so the placeholder mechanism is
//! implemented with two thread-local slots that are only set while
//! [`Args::new`](super::Args::new) / [`Args::push`](super::Args::push)
//! (collector) or [`Args::decode`](super::Args::decode) /
//! [`Args::get`](super::Args::get) (provider) run. Serialization is
//! synchronous, so a thread-local is enough; the previous slot content is
//! restored afterwards (also on panic), so nested use is fine.
//!
//! Outside that context:
//! * serializing a `Binary` is an error (`Binary` can only be sent inside
//!   arguments);
//! * deserializing a placeholder object is an error, but a `Binary` can
//!   always be deserialized from a byte buffer or an array of numbers 0..=255.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::Value;

/// Binary payload inside arguments: serializes as a
/// `{"_placeholder":true,"num":N}` object and travels as an attachment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Binary(pub Bytes);

impl From<Bytes> for Binary {
    fn from(b: Bytes) -> Self {
        Binary(b)
    }
}

impl From<Vec<u8>> for Binary {
    fn from(b: Vec<u8>) -> Self {
        Binary(Bytes::from(b))
    }
}

struct Collector {
    /// Number of attachments that precede the collected ones.
    offset: usize,
    items: Vec<Bytes>,
}

thread_local! {
    static COLLECTOR: RefCell<Option<Collector>> = const { RefCell::new(None) };
    static PROVIDER: RefCell<Option<Vec<Bytes>>> = const { RefCell::new(None) };
}

/// Restores the previous collector on drop.
struct CollectorGuard(Option<Option<Collector>>);

impl Drop for CollectorGuard {
    fn drop(&mut self) {
        if let Some(prev) = self.0.take() {
            COLLECTOR.with(|c| *c.borrow_mut() = prev);
        }
    }
}

/// Restores the previous provider on drop.
struct ProviderGuard(Option<Option<Vec<Bytes>>>);

impl Drop for ProviderGuard {
    fn drop(&mut self) {
        if let Some(prev) = self.0.take() {
            PROVIDER.with(|p| *p.borrow_mut() = prev);
        }
    }
}

/// Run `f` with a collector whose placeholders start at `offset`; returns the
/// result of `f` and the binaries collected in document order.
pub(crate) fn collect<R>(offset: usize, f: impl FnOnce() -> R) -> (R, Vec<Bytes>) {
    let fresh = Collector {
        offset,
        items: Vec::new(),
    };
    let prev = COLLECTOR.with(|c| c.borrow_mut().replace(fresh));
    let mut guard = CollectorGuard(Some(prev));
    let out = f();
    let prev = guard.0.take().unwrap_or_default();
    let mine = COLLECTOR.with(|c| std::mem::replace(&mut *c.borrow_mut(), prev));
    (out, mine.map(|c| c.items).unwrap_or_default())
}

/// Run `f` with `attachments` available to placeholder deserialization.
pub(crate) fn provide<R>(attachments: &[Bytes], f: impl FnOnce() -> R) -> R {
    let prev = PROVIDER.with(|p| p.borrow_mut().replace(attachments.to_vec()));
    let _guard = ProviderGuard(Some(prev));
    f()
}

/// The attachment index of a placeholder `num` value: a non-negative integer
/// (an integral float such as `1.0` counts, as in JavaScript).
pub(crate) fn placeholder_index(num: &Value) -> Option<usize> {
    let Value::Number(n) = num else { return None };
    if let Some(u) = n.as_u64() {
        return usize::try_from(u).ok();
    }
    if n.is_i64() {
        return None; // negative integer
    }
    let f = n.as_f64()?;
    if f.is_finite() && f >= 0.0 && f.fract() == 0.0 && f < 9_007_199_254_740_992.0 {
        // Exact: integral and below 2^53.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let u = f as u64;
        return usize::try_from(u).ok();
    }
    None
}

impl Serialize for Binary {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let num = COLLECTOR.with(|c| {
            let mut c = c.borrow_mut();
            c.as_mut().map(|col| {
                col.items.push(self.0.clone());
                col.offset + col.items.len() - 1
            })
        });
        let Some(num) = num else {
            return Err(serde::ser::Error::custom(
                "Binary can only be serialized through Args::new/Args::one/Args::push",
            ));
        };
        let mut st = serializer.serialize_struct("Placeholder", 2)?;
        st.serialize_field("_placeholder", &true)?;
        st.serialize_field("num", &num)?;
        st.end()
    }
}

struct BinaryVisitor;

impl<'de> Visitor<'de> for BinaryVisitor {
    type Value = Binary;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a binary attachment placeholder or a byte array")
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Binary, E> {
        Ok(Binary(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Binary, E> {
        Ok(Binary(Bytes::from(v)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Binary, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Binary(Bytes::from(out)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Binary, A::Error> {
        let mut is_placeholder = false;
        let mut num = None;
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "_placeholder" => is_placeholder = map.next_value::<Value>()? == Value::Bool(true),
                "num" => num = Some(map.next_value::<Value>()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if !is_placeholder {
            return Err(de::Error::custom("expected a binary placeholder object"));
        }
        let idx = num
            .as_ref()
            .and_then(placeholder_index)
            .ok_or_else(|| de::Error::custom("invalid placeholder index"))?;
        let found = PROVIDER.with(|p| p.borrow().as_ref().map(|a| a.get(idx).cloned()));
        match found {
            Some(Some(b)) => Ok(Binary(b)),
            Some(None) => Err(de::Error::custom(
                "placeholder refers to a missing attachment",
            )),
            None => Err(de::Error::custom(
                "binary placeholders can only be resolved through Args::decode/Args::get",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Binary {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Binary, D::Error> {
        deserializer.deserialize_any(BinaryVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn serialize_outside_context_is_an_error() {
        assert!(serde_json::to_string(&Binary(Bytes::from_static(b"x"))).is_err());
    }

    #[test]
    fn deserialize_outside_context() {
        let b: Binary = serde_json::from_str("[1,2,255]").unwrap_or_default();
        assert_eq!(b.0.as_ref(), &[1, 2, 255]);
        assert!(serde_json::from_str::<Binary>(r#"{"_placeholder":true,"num":0}"#).is_err());
        assert!(serde_json::from_str::<Binary>("[256]").is_err());
    }

    #[test]
    fn collect_restores_previous_state() {
        let ((inner, outer_json), outer) = collect(0, || {
            let first = serde_json::to_string(&Binary(Bytes::from_static(b"a")));
            let (_, inner) = collect(5, || serde_json::to_string(&Binary(Bytes::new())));
            let second = serde_json::to_string(&Binary(Bytes::from_static(b"b")));
            (inner, (first.ok(), second.ok()))
        });
        assert_eq!(inner.len(), 1);
        assert_eq!(outer.len(), 2);
        assert_eq!(
            outer_json.1.as_deref(),
            Some(r#"{"_placeholder":true,"num":1}"#)
        );
        assert!(serde_json::to_string(&Binary(Bytes::new())).is_err());
    }

    #[test]
    fn placeholder_indices() {
        assert_eq!(placeholder_index(&json!(0)), Some(0));
        assert_eq!(placeholder_index(&json!(3)), Some(3));
        assert_eq!(placeholder_index(&json!(1.0)), Some(1));
        assert_eq!(placeholder_index(&json!(-1)), None);
        assert_eq!(placeholder_index(&json!(0.5)), None);
        assert_eq!(placeholder_index(&json!("0")), None);
        assert_eq!(placeholder_index(&json!(null)), None);
    }
}
