//! Session ids: 120 random bits from the thread-local CSPRNG, base64url (20 chars).
//!
//! A cluster worker behind a shared port tags the Engine.IO sids it makes with its
//! index in the first two characters (12 bits), so the primary routes a request
//! from its sid alone; such a sid keeps 108 random bits.

use std::{fmt, sync::OnceLock};

use base64::Engine as _;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
/// An Engine.IO session id (also a socket id): 20 base64url characters.
pub struct Sid([u8; 20]);

impl Sid {
    /// A fresh random id (120 bits).
    pub fn random() -> Sid {
        let bytes: [u8; 15] = rand::random();
        let mut out = [0u8; 20];
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut out)
            .expect("15 bytes always encode to 20 base64 characters");
        debug_assert_eq!(written, 20);
        Sid(out)
    }

    /// A new Engine.IO session id: [`Sid::random`], tagged with this process's
    /// worker index when [`set_worker_tag`] was called.
    pub fn for_session() -> Sid {
        let mut sid = Sid::random();
        if let Some(tag) = WORKER_TAG.get() {
            sid.0[..2].copy_from_slice(tag);
        }
        sid
    }

    /// Parses a sid from a query string value; `None` if it cannot be one of ours.
    pub fn parse(s: &str) -> Option<Sid> {
        let bytes: [u8; 20] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Sid(bytes))
    }

    /// Its text.
    pub fn as_str(&self) -> &str {
        // Only base64url characters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// The base64url alphabet: a tag character's value is its position.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Most workers a tag can name (two base64 characters).
pub const MAX_TAGGED_WORKERS: usize = 64 * 64;

static WORKER_TAG: OnceLock<[u8; 2]> = OnceLock::new();

/// Makes every later [`Sid::for_session`] of this process carry worker `index`
/// (below [`MAX_TAGGED_WORKERS`]); the first call wins.
pub fn set_worker_tag(index: usize) {
    let index = index % MAX_TAGGED_WORKERS;
    let _ = WORKER_TAG.set([ALPHABET[index / 64], ALPHABET[index % 64]]);
}

/// The worker index a tagged sid carries (any 20-character base64url string
/// names one; the caller checks it is a worker it has).
pub fn worker_of(sid: &[u8]) -> Option<usize> {
    if sid.len() != 20 {
        return None;
    }
    let value = |c: u8| ALPHABET.iter().position(|&a| a == c);
    Some(value(sid[0])? * 64 + value(sid[1])?)
}

impl fmt::Display for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Sid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sid({})", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn random_ids_are_unique_and_parse_back() {
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            let sid = Sid::random();
            assert_eq!(sid.as_str().len(), 20);
            assert_eq!(Sid::parse(sid.as_str()), Some(sid));
            assert!(seen.insert(sid));
        }
    }

    #[test]
    fn a_tagged_sid_names_its_worker() {
        // Untagged: the tag is random, and every sid still parses as one.
        let sid = Sid::random();
        assert!(worker_of(sid.as_str().as_bytes()).is_some());
        assert_eq!(worker_of(b"short"), None);
        assert_eq!(worker_of(b"!aaaaaaaaaaaaaaaaaaa"), None);
        for index in [0, 1, 63, 64, 1000, MAX_TAGGED_WORKERS - 1] {
            let tag = [ALPHABET[index / 64], ALPHABET[index % 64]];
            let mut bytes = *Sid::random()
                .as_str()
                .as_bytes()
                .first_chunk::<20>()
                .unwrap();
            bytes[..2].copy_from_slice(&tag);
            assert_eq!(worker_of(&bytes), Some(index));
        }
        set_worker_tag(5);
        let a = Sid::for_session();
        let b = Sid::for_session();
        assert_ne!(a, b, "108 random bits remain");
        assert_eq!(worker_of(a.as_str().as_bytes()), Some(5));
        assert_eq!(Sid::parse(a.as_str()), Some(a));
    }

    #[test]
    fn rejects_foreign_ids() {
        assert_eq!(Sid::parse(""), None);
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaa!"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaaaa"), None);
    }
}
