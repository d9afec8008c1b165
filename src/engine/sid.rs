//! Session ids: 120 random bits from the thread-local CSPRNG, base64url (20 chars).

use std::fmt;

use base64::Engine as _;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sid([u8; 20]);

impl Sid {
    pub fn random() -> Sid {
        let bytes: [u8; 15] = rand::random();
        let mut out = [0u8; 20];
        let written = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_slice(bytes, &mut out)
            .expect("15 bytes always encode to 20 base64 characters");
        debug_assert_eq!(written, 20);
        Sid(out)
    }

    /// Parses a sid from a query string value; `None` if it cannot be one of ours.
    pub fn parse(s: &str) -> Option<Sid> {
        let bytes: [u8; 20] = s.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
            .then_some(Sid(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only base64url characters are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
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
    fn rejects_foreign_ids() {
        assert_eq!(Sid::parse(""), None);
        assert_eq!(Sid::parse("short"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaa!"), None);
        assert_eq!(Sid::parse("aaaaaaaaaaaaaaaaaaaaa"), None);
    }
}
