//! The headers of a session's first request, kept for the session's whole life.
//!
//! A `HeaderMap` of six headers takes about 700 bytes (an entry is ~100 bytes,
//! and each value is an allocation of its own), per connection, while most
//! applications never read them. So the headers are kept as one buffer of
//! names and values, and the `HeaderMap` is built the first time it is asked for.

use std::sync::OnceLock;

use http::{HeaderMap, HeaderName, HeaderValue};

/// The first request's headers: one allocation, a `HeaderMap` on demand.
#[derive(Debug, Clone, Default)]
pub struct RequestHeaders {
    /// `[name length u32 LE][value length u32 LE][name][value]` per header, in order.
    raw: Box<[u8]>,
    /// Boxed: most sessions never build it.
    map: OnceLock<Box<HeaderMap>>,
}

impl RequestHeaders {
    /// Copies `headers` (which may be slices of hyper's read buffer: a plain
    /// clone would keep that whole buffer alive).
    pub fn new(headers: &HeaderMap) -> RequestHeaders {
        let size = headers
            .iter()
            .map(|(k, v)| 8 + k.as_str().len() + v.len())
            .sum();
        let mut raw = Vec::with_capacity(size);
        for (name, value) in headers {
            let (name, value) = (name.as_str().as_bytes(), value.as_bytes());
            // hyper caps a request's header section far below 4 GiB.
            raw.extend_from_slice(&(name.len() as u32).to_le_bytes());
            raw.extend_from_slice(&(value.len() as u32).to_le_bytes());
            raw.extend_from_slice(name);
            raw.extend_from_slice(value);
        }
        RequestHeaders {
            raw: raw.into_boxed_slice(),
            map: OnceLock::new(),
        }
    }

    /// Every header in request order (a repeated name appears once per value).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut rest = &self.raw[..];
        std::iter::from_fn(move || {
            let (lens, tail) = rest.split_first_chunk::<8>()?;
            let name_len = u32::from_le_bytes([lens[0], lens[1], lens[2], lens[3]]) as usize;
            let value_len = u32::from_le_bytes([lens[4], lens[5], lens[6], lens[7]]) as usize;
            let (name, tail) = tail.split_at(name_len);
            let (value, tail) = tail.split_at(value_len);
            rest = tail;
            // Names come from `HeaderName::as_str`: lowercase ASCII.
            Some((std::str::from_utf8(name).unwrap_or_default(), value))
        })
    }

    /// The first value of `name` (lowercase), without building the map.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// Whether the header `name` was sent.
    pub fn contains(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// The headers as a `HeaderMap`, built on the first call.
    pub fn map(&self) -> &HeaderMap {
        self.map.get_or_init(|| {
            let mut map = Box::new(HeaderMap::new());
            for (name, value) in self.iter() {
                // They were a valid name and value when they were copied.
                if let (Ok(name), Ok(value)) = (
                    HeaderName::from_bytes(name.as_bytes()),
                    HeaderValue::from_bytes(value),
                ) {
                    map.append(name, value);
                }
            }
            map
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_every_header_in_order_with_repeats() {
        let mut original = HeaderMap::new();
        original.append("host", HeaderValue::from_static("example.com"));
        original.append("cookie", HeaderValue::from_static("a=1"));
        original.append("cookie", HeaderValue::from_static("b=2"));
        original.append("x-empty", HeaderValue::from_static(""));
        original.append("x-latin1", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let headers = RequestHeaders::new(&original);
        assert_eq!(headers.get("cookie"), Some(&b"a=1"[..]));
        assert_eq!(headers.get("x-empty"), Some(&b""[..]));
        assert!(headers.contains("host"));
        assert!(!headers.contains("origin"));
        assert_eq!(headers.iter().count(), 5);
        assert_eq!(headers.map(), &original);
        let all: Vec<_> = headers.map().get_all("cookie").iter().collect();
        assert_eq!(all, ["a=1", "b=2"]);
    }

    #[test]
    fn no_headers() {
        let headers = RequestHeaders::new(&HeaderMap::new());
        assert_eq!(headers.iter().count(), 0);
        assert!(headers.map().is_empty());
        assert_eq!(headers.get("host"), None);
    }
}
