//! Small scanners over JSON text that is already known to be valid (checked
//! by serde_json or produced by it). They never panic, whatever the input;
//! on invalid JSON their results are merely meaningless.

use std::ops::Range;

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Iterator over the byte ranges of the top-level values of a
/// comma-separated JSON value list (the inside of an array, without `[ ]`).
/// Ranges exclude surrounding whitespace.
pub(crate) struct Elements<'a> {
    json: &'a [u8],
    pos: usize,
}

impl<'a> Elements<'a> {
    pub(crate) fn new(json: &'a [u8]) -> Self {
        Elements { json, pos: 0 }
    }
}

impl Iterator for Elements<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        let json = self.json;
        let mut i = self.pos;
        while json.get(i).is_some_and(|&b| is_ws(b)) {
            i += 1;
        }
        if i >= json.len() {
            self.pos = json.len();
            return None;
        }
        let start = i;
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut end = json.len();
        while let Some(&b) = json.get(i) {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                }
            } else {
                match b {
                    b'"' => in_string = true,
                    b'[' | b'{' => depth += 1,
                    b']' | b'}' => depth = depth.saturating_sub(1),
                    b',' if depth == 0 => {
                        end = i;
                        break;
                    }
                    _ => {}
                }
            }
            i += 1;
        }
        // Skip the separating comma (if any) for the next call.
        self.pos = if end < json.len() { end + 1 } else { end };
        let mut stop = end;
        while stop > start && json.get(stop - 1).is_some_and(|&b| is_ws(b)) {
            stop -= 1;
        }
        Some(start..stop)
    }
}

/// Whether arrays/objects in `json` nest deeper than `max` levels.
pub(crate) fn depth_exceeds(json: &[u8], max: usize) -> bool {
    // Nesting deeper than `max` needs more than `max` opening brackets: most
    // packets have far fewer, and counting them is a tight, vectorised loop.
    if json.len() <= max || json.iter().filter(|&&b| b == b'[' || b == b'{').count() <= max {
        return false;
    }
    nesting_exceeds(json, max)
}

/// The exact scan: brackets inside strings do not count.
fn nesting_exceeds(json: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Append `s` as a JSON string literal (same escaping as serde_json).
/// The length of what [`write_json_string`] writes for `s`.
pub(crate) fn json_string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

pub(crate) fn write_json_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    let mut last = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc: Option<&str> = match b {
            b'"' => Some("\\\""),
            b'\\' => Some("\\\\"),
            b'\n' => Some("\\n"),
            b'\r' => Some("\\r"),
            b'\t' => Some("\\t"),
            0x08 => Some("\\b"),
            0x0c => Some("\\f"),
            0..=0x1f => Some(""),
            _ => None,
        };
        let Some(esc) = esc else { continue };
        // `i` is at an ASCII byte, hence a char boundary.
        out.push_str(s.get(last..i).unwrap_or_default());
        if esc.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        } else {
            out.push_str(esc);
        }
        last = i + 1;
    }
    out.push_str(s.get(last..).unwrap_or_default());
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<&str> {
        Elements::new(s.as_bytes())
            .map(|r| s.get(r).unwrap_or("?"))
            .collect()
    }

    #[test]
    fn splits_top_level() {
        assert!(split("").is_empty());
        assert!(split("  ").is_empty());
        assert_eq!(split("1"), ["1"]);
        assert_eq!(
            split(r#" 1 , "a,]\"" ,{"b":[1,2]},[3,{}] "#),
            ["1", r#""a,]\"""#, r#"{"b":[1,2]}"#, "[3,{}]"]
        );
    }

    #[test]
    fn depth() {
        assert!(!depth_exceeds(b"[[]]", 2));
        assert!(depth_exceeds(b"[[[]]]", 2));
        assert!(!depth_exceeds(br#"["[[[[["]"#, 2));
    }

    proptest::proptest! {
        /// The bracket-count shortcut never changes the answer of the exact scan.
        #[test]
        fn shortcut_agrees_with_the_scan(
            json in proptest::collection::vec(proptest::sample::select(b"[]{}\"\\ a,".to_vec()), 0..64),
            max in 0usize..8,
        ) {
            proptest::prop_assert_eq!(depth_exceeds(&json, max), nesting_exceeds(&json, max));
        }
    }

    #[test]
    fn json_string_matches_serde_json() {
        for s in [
            "",
            "abc",
            "a\"b\\c",
            "\u{0}\u{1f}\n\r\t\u{8}\u{c}\u{7f}",
            "é€😀",
        ] {
            let mut out = String::new();
            write_json_string(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap_or_default());
        }
    }
}
