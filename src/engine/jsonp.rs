//! JSONP polling (`j=<n>` on a v3 handshake), for browsers without XHR CORS:
//! a GET answers a script, `___eio[<n>]("<payload>");`, and a POST carries the
//! payload as the form field `d`. The payloads inside are v3 text payloads.

use bytes::{BufMut, Bytes, BytesMut};

/// The callback index of a `j` query value: its digits, as Node keeps them.
/// `None` when they do not make a number we can echo.
pub(crate) fn callback_index(j: &str) -> Option<u32> {
    let digits: String = j.chars().filter(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// Wraps a v3 text payload into the script a JSONP GET answers.
pub(crate) fn wrap(index: u32, payload: &[u8]) -> Bytes {
    let text = String::from_utf8_lossy(payload);
    // Valid JavaScript, not only valid JSON: U+2028 and U+2029 end a JS string.
    let js = serde_json::Value::String(text.into_owned())
        .to_string()
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029");
    let mut digits = itoa::Buffer::new();
    let mut out = BytesMut::with_capacity(js.len() + 20);
    out.put_slice(b"___eio[");
    out.put_slice(digits.format(index).as_bytes());
    out.put_slice(b"](");
    out.put_slice(js.as_bytes());
    out.put_slice(b");");
    out.freeze()
}

/// The payload of a JSONP POST body (`d=<form-encoded payload>`); `None` without
/// a `d` field (Node then ignores the request). The client escapes newlines as
/// `\n` and an escaped `\n` as `\\n`, both undone here.
pub(crate) fn unwrap(body: &[u8]) -> Option<Bytes> {
    let body = std::str::from_utf8(body).ok()?;
    let d = body
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| form_decode(k) == "d")
        .map(|(_, v)| form_decode(v))?;
    let mut out = String::with_capacity(d.len());
    let mut rest = d.as_str();
    while let Some(i) = rest.find("\\n") {
        let escaped = rest[..i].ends_with('\\');
        if escaped {
            // `\\n` stands for the two characters `\n`.
            out.push_str(&rest[..i - 1]);
            out.push_str("\\n");
        } else {
            out.push_str(&rest[..i]);
            out.push('\n');
        }
        rest = &rest[i + 2..];
    }
    out.push_str(rest);
    Some(Bytes::from(out))
}

/// `application/x-www-form-urlencoded` decoding: `+` is a space, `%XX` a byte;
/// invalid UTF-8 becomes U+FFFD, a malformed escape stays as it is.
pub(crate) fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_as_a_script() {
        assert_eq!(
            &wrap(3, "6:4hello".as_bytes())[..],
            b"___eio[3](\"6:4hello\");"
        );
        assert_eq!(
            &wrap(0, "3:4\"\u{2028}".as_bytes())[..],
            "___eio[0](\"3:4\\\"\\u2028\");".as_bytes()
        );
    }

    #[test]
    fn callback_index_keeps_the_digits() {
        assert_eq!(callback_index("0"), Some(0));
        assert_eq!(callback_index("12"), Some(12));
        assert_eq!(callback_index("1x2"), Some(12));
        assert_eq!(callback_index(""), None);
        assert_eq!(callback_index("x"), None);
        assert_eq!(callback_index("99999999999"), None);
    }

    #[test]
    fn unwraps_the_form_field() {
        assert_eq!(unwrap(b"d=6%3A4hello").unwrap(), "6:4hello");
        assert_eq!(unwrap(b"x=1&d=3:4a+b").unwrap(), "3:4a b");
        // `\n` is a newline, `\\n` the two characters `\n`.
        assert_eq!(unwrap(br"d=a\nb\\nc").unwrap(), "a\nb\\nc");
        assert_eq!(unwrap(b"e=1"), None);
        assert_eq!(unwrap(b"d=%E2%82%AC").unwrap(), "€");
        assert_eq!(form_decode("%zz%4"), "%zz%4");
    }
}
