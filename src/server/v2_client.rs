//! Socket.IO protocol v4, as Socket.IO v2 clients speak it over Engine.IO v3
//! (`allow_eio3`), where it differs from v5: the main namespace is joined
//! without a CONNECT, a CONNECT carries its auth as the namespace's query
//! string, the CONNECT reply has no payload, and a CONNECT_ERROR's payload is
//! the error's data or message itself.

use serde_json::{value::RawValue, Map, Value};

use super::handler::ConnectError;
use crate::engine::jsonp::form_decode;
use crate::parser::{nsp_name, Packet, PacketData};

/// Splits a v2 CONNECT's namespace (`/admin?token=abc`) into the namespace and
/// its query as the auth object (`{"token":"abc"}`), as Node reads it with
/// `new URL(nsp)`: form-urlencoded values, the last of a repeated key wins.
pub(crate) fn split_connect_nsp(nsp: &str) -> (String, Value) {
    let Some((name, query)) = nsp.split_once('?') else {
        return (nsp.to_owned(), Value::Object(Map::new()));
    };
    let mut auth = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        auth.insert(form_decode(k), Value::String(form_decode(v)));
    }
    (name.to_owned(), Value::Object(auth))
}

/// The CONNECT_ERROR of a refused v2 client: Node sends `err.data || err.message`.
pub(crate) fn connect_error(nsp: &str, err: &ConnectError) -> Packet {
    let truthy = |v: &&Value| match v {
        Value::Null | Value::Bool(false) => false,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Bool(true) | Value::Array(_) | Value::Object(_) => true,
    };
    let payload = match err.data.as_ref().filter(truthy) {
        Some(data) => data.to_string(),
        None => Value::String(err.message.clone()).to_string(),
    };
    let raw = RawValue::from_string(payload).unwrap_or_else(|_| RawValue::NULL.to_owned());
    Packet {
        nsp: nsp_name(nsp),
        data: PacketData::ConnectError(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn namespace_query_is_the_auth() {
        assert_eq!(split_connect_nsp("/admin"), ("/admin".into(), json!({})));
        assert_eq!(
            split_connect_nsp("/admin?token=abc&x=a+b%20c%2B&x=2&flag&=e&bad=%zz"),
            (
                "/admin".into(),
                json!({"token": "abc", "x": "2", "flag": "", "": "e", "bad": "%zz"})
            )
        );
        assert_eq!(
            split_connect_nsp("/?a=%C3%A9%FF"),
            ("/".into(), json!({"a": "é\u{fffd}"}))
        );
    }

    #[test]
    fn connect_error_is_the_data_or_the_message() {
        let encode = |err: ConnectError| {
            let mut s = String::new();
            connect_error("/admin", &err).encode_into(&mut s);
            s
        };
        assert_eq!(
            encode(ConnectError::new("not authorized")),
            r#"4/admin,"not authorized""#
        );
        let with_data = ConnectError {
            message: "refused".into(),
            data: Some(json!({"code": 7})),
        };
        assert_eq!(encode(with_data), r#"4/admin,{"code":7}"#);
        let falsy_data = ConnectError {
            message: "refused".into(),
            data: Some(json!(0)),
        };
        assert_eq!(encode(falsy_data), r#"4/admin,"refused""#);
    }
}
