//! `socket.handshake`: what the client's first request and CONNECT packet said.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;
use serde_json::Value;
use tracing::debug;

use crate::engine::{HandshakeRequest, RequestHeaders};

/// Node's `socket.handshake`.
///
/// It keeps the connection's first request (shared by every socket of the
/// connection) and derives `time`, `url` and `query` from it when asked: a
/// socket lives as long as its client, and most never read them.
#[derive(Debug, Clone)]
pub struct Handshake {
    request: Arc<HandshakeRequest>,
    auth: serde_json::Value,
}

impl Handshake {
    pub(crate) fn new(request: Arc<HandshakeRequest>, auth: serde_json::Value) -> Handshake {
        Handshake { request, auth }
    }

    /// The headers of the connection's first request.
    pub fn headers(&self) -> &HeaderMap {
        self.request.headers.map()
    }

    /// When the connection was made, as Node prints it (`Date.toString()` is
    /// locale-bound; rsio uses RFC 2822 in UTC).
    pub fn time(&self) -> String {
        httpdate(self.request.issued)
    }

    /// The client's address: the TCP peer; with `trust_proxy`, the address the
    /// proxy names in `X-Forwarded-For` (its last entry, port 0 when it gives
    /// none). Never the header's word without `trust_proxy`.
    pub fn address(&self) -> Option<SocketAddr> {
        self.request.remote_addr
    }

    /// Whether the request came from another origin (it carried an `Origin` header).
    pub fn xdomain(&self) -> bool {
        self.request.headers.contains("origin")
    }

    /// Whether the client used TLS. rsio terminates no TLS itself, so this is
    /// `true` only when `trust_proxy` is set and the proxy sent
    /// `X-Forwarded-Proto: https`.
    pub fn secure(&self) -> bool {
        self.request.secure
    }

    /// Milliseconds since the Unix epoch.
    pub fn issued(&self) -> u64 {
        self.request
            .issued
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default()
    }

    /// The first request's path and query, e.g. `/socket.io/?EIO=4&transport=polling`.
    pub fn url(&self) -> String {
        self.request.url.to_string()
    }

    /// The first request's query, percent-decoded; a repeated key keeps its last value.
    pub fn query(&self) -> HashMap<String, String> {
        let url = &self.request.url;
        url.split_once('?')
            .map_or("", |(_, query)| query)
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (percent_decode(k), percent_decode(v))
            })
            .collect()
    }

    /// The CONNECT packet's payload, `{}` when absent.
    pub fn auth(&self) -> &serde_json::Value {
        &self.auth
    }

    /// The handshake as JSON (headers as strings), e.g. for `fetch_sockets` across servers.
    pub fn to_json(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct View<'a> {
            headers: HashMap<&'a str, &'a str>,
            time: String,
            address: Option<String>,
            xdomain: bool,
            secure: bool,
            issued: u64,
            url: String,
            query: HashMap<String, String>,
            auth: &'a serde_json::Value,
        }
        let view = View {
            headers: self
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
                .collect(),
            time: self.time(),
            address: self.address().map(|a| a.ip().to_string()),
            xdomain: self.xdomain(),
            secure: self.secure(),
            issued: self.issued(),
            url: self.url(),
            query: self.query(),
            auth: &self.auth,
        };
        serde_json::to_value(view).unwrap_or_default()
    }

    /// Reads a handshake back from its JSON: [`Handshake::to_json`]'s, or a
    /// Node server's `socket.handshake` as its Redis adapters send it (how
    /// `fetch_sockets` learns the handshake of a socket on another server).
    ///
    /// A missing field takes its default (no headers, empty url, no address,
    /// not secure, issued at the epoch, `{}` auth); a field of the wrong type
    /// gives `None` (logged at debug). `time`, `xdomain` and `query` are
    /// derived from `issued`, `headers` and `url`, as for a local socket, so
    /// their JSON is not read. The address carries no port (the JSON has
    /// none): it reads back with port 0. A header name or value that HTTP
    /// cannot carry is left out.
    pub fn from_json(json: &Value) -> Option<Handshake> {
        match parse(json) {
            Ok(handshake) => Some(handshake),
            Err(field) => {
                debug!(target: "socket.io", field, "handshake JSON: field of the wrong type");
                None
            }
        }
    }
}

/// Equal when every field [`Handshake::to_json`] carries is equal (headers
/// compared as a map, in any order).
impl PartialEq for Handshake {
    fn eq(&self, other: &Handshake) -> bool {
        let (a, b) = (&*self.request, &*other.request);
        self.auth == other.auth
            && a.url == b.url
            && a.remote_addr == b.remote_addr
            && a.secure == b.secure
            && a.issued == b.issued
            && self.headers() == other.headers()
    }
}

/// [`Handshake::from_json`]; `Err` names the field of the wrong type.
fn parse(json: &Value) -> Result<Handshake, &'static str> {
    let obj = json.as_object().ok_or("handshake")?;
    // Node's `JSON.stringify` leaves `undefined` out; `null` means the same.
    let field = |name: &str| obj.get(name).filter(|v| !v.is_null());
    let headers = match field("headers") {
        Some(v) => parse_headers(v)?,
        None => HeaderMap::new(),
    };
    let url = match field("url") {
        Some(v) => v.as_str().ok_or("url")?,
        None => "",
    };
    let remote_addr = match field("address") {
        Some(v) => {
            let text = v.as_str().ok_or("address")?;
            match text.parse::<IpAddr>() {
                Ok(ip) => Some(SocketAddr::new(ip, 0)),
                Err(_) => {
                    debug!(target: "socket.io", address = text, "handshake JSON: address is no IP");
                    None
                }
            }
        }
        None => None,
    };
    let secure = match field("secure") {
        Some(v) => v.as_bool().ok_or("secure")?,
        None => false,
    };
    let issued = match field("issued") {
        Some(v) => {
            // `+new Date()` is an integer, but any JSON number is a number to Node.
            let ms = v
                .as_u64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.is_finite() && *f >= 0.0)
                        .map(|f| f as u64)
                })
                .ok_or("issued")?;
            UNIX_EPOCH
                .checked_add(Duration::from_millis(ms))
                .ok_or("issued")?
        }
        None => UNIX_EPOCH,
    };
    let auth = field("auth")
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let request = HandshakeRequest {
        headers: RequestHeaders::new(&headers),
        url: url.into(),
        remote_addr,
        secure,
        issued,
    };
    Ok(Handshake::new(Arc::new(request), auth))
}

/// Headers as Node keeps them: a string per name, or an array of strings
/// (`set-cookie`).
fn parse_headers(json: &Value) -> Result<HeaderMap, &'static str> {
    let mut headers = HeaderMap::new();
    for (name, value) in json.as_object().ok_or("headers")? {
        let values: Vec<&str> = match value {
            Value::String(s) => vec![s.as_str()],
            Value::Array(list) => list
                .iter()
                .map(Value::as_str)
                .collect::<Option<_>>()
                .ok_or("headers")?,
            _ => return Err("headers"),
        };
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            debug!(target: "socket.io", name = name.as_str(), "handshake JSON: header name left out");
            continue;
        };
        for value in values {
            match HeaderValue::from_str(value) {
                Ok(value) => {
                    headers.append(header.clone(), value);
                }
                Err(_) => {
                    debug!(target: "socket.io", name = name.as_str(), "handshake JSON: header value left out")
                }
            }
        }
    }
    Ok(headers)
}

/// RFC 7231 date (`Mon, 23 Nov 2026 11:29:22 GMT`), without a dependency.
fn httpdate(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    let weekday = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let month_name = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(month - 1) as usize];
    format!("{weekday}, {day:02} {month_name} {year} {h:02}:{m:02}:{s:02} GMT")
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
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
    use std::time::Duration;

    #[test]
    fn formats_http_dates() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_433_362);
        assert_eq!(httpdate(t), "Mon, 23 Nov 2026 11:29:22 GMT");
        assert_eq!(httpdate(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
    }

    #[test]
    fn fields_come_from_the_first_request() {
        let mut headers = http::HeaderMap::new();
        headers.insert("origin", http::HeaderValue::from_static("http://a.example"));
        let request = HandshakeRequest {
            headers: crate::engine::RequestHeaders::new(&headers),
            url: "/socket.io/?EIO=4&transport=polling&name=a%20b&flag".into(),
            remote_addr: None,
            secure: false,
            issued: UNIX_EPOCH + Duration::from_millis(1_795_433_362_123),
        };
        let hs = Handshake::new(Arc::new(request), serde_json::json!({"token": 1}));
        assert_eq!(
            hs.url(),
            "/socket.io/?EIO=4&transport=polling&name=a%20b&flag"
        );
        let query = hs.query();
        assert_eq!(query.get("name").map(String::as_str), Some("a b"));
        assert_eq!(query.get("flag").map(String::as_str), Some(""));
        assert_eq!(query.len(), 4);
        assert!(hs.xdomain());
        assert_eq!(hs.headers().get("origin").unwrap(), "http://a.example");
        assert_eq!(hs.issued(), 1_795_433_362_123);
        assert_eq!(hs.time(), "Mon, 23 Nov 2026 11:29:22 GMT");
        assert_eq!(hs.auth()["token"], 1);
        let json = hs.to_json();
        assert_eq!(json["query"]["transport"], "polling");
        assert_eq!(json["headers"]["origin"], "http://a.example");
    }

    fn sample(addr: Option<SocketAddr>, issued: SystemTime) -> Handshake {
        let mut headers = http::HeaderMap::new();
        headers.insert("origin", http::HeaderValue::from_static("http://a.example"));
        headers.insert("user-agent", http::HeaderValue::from_static("test/1"));
        let request = HandshakeRequest {
            headers: crate::engine::RequestHeaders::new(&headers),
            url: "/socket.io/?q=1&EIO=4&transport=websocket".into(),
            remote_addr: addr,
            secure: true,
            issued,
        };
        Handshake::new(
            Arc::new(request),
            serde_json::json!({"token": "x", "n": [1]}),
        )
    }

    #[test]
    fn reads_back_its_own_json() {
        let issued = UNIX_EPOCH + Duration::from_millis(1_795_433_362_123);
        let hs = sample(Some("10.0.0.7:0".parse().unwrap()), issued);
        assert_eq!(Handshake::from_json(&hs.to_json()), Some(hs.clone()));
        // A live handshake: the JSON keeps the address' IP and the issue time in ms.
        let live = sample(
            Some("[::1]:51234".parse().unwrap()),
            issued + Duration::from_nanos(456_789),
        );
        let back = Handshake::from_json(&live.to_json()).unwrap();
        assert_eq!(back.address(), Some("[::1]:0".parse().unwrap()));
        assert_eq!(back.to_json(), live.to_json());
        assert_ne!(back, live);
    }

    #[test]
    fn reads_a_node_handshake() {
        // `JSON.stringify(socket.handshake)` of socket.io 4.8.4, for a client
        // with `auth: {token: "x"}, query: {q: "1"}`.
        let node = serde_json::json!({
            "headers": {"user-agent": "node-XMLHttpRequest", "accept": "*/*",
                        "host": "127.0.0.1:43113", "connection": "close",
                        "set-cookie": ["a=1", "b=2"]},
            "time": "Fri Dec 04 2026 06:28:40 GMT+0000 (Coordinated Universal Time)",
            "address": "::ffff:127.0.0.1",
            "xdomain": false,
            "secure": false,
            "issued": 1796365720364u64,
            "url": "/socket.io/?q=1&EIO=4&transport=polling&t=lroqkp0j",
            "query": {"q": "1", "EIO": "4", "transport": "polling", "t": "lroqkp0j"},
            "auth": {"token": "x"}
        });
        let hs = Handshake::from_json(&node).unwrap();
        assert_eq!(hs.auth(), &serde_json::json!({"token": "x"}));
        assert_eq!(hs.query().get("q").map(String::as_str), Some("1"));
        assert_eq!(hs.query().len(), 4);
        assert_eq!(hs.address(), Some("[::ffff:127.0.0.1]:0".parse().unwrap()));
        assert_eq!(hs.issued(), 1_796_365_720_364);
        assert_eq!(hs.time(), "Fri, 04 Dec 2026 06:28:40 GMT");
        assert!(!hs.xdomain() && !hs.secure());
        assert_eq!(hs.headers()["host"], "127.0.0.1:43113");
        let cookies: Vec<_> = hs.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(hs.url(), node["url"]);
    }

    #[test]
    fn missing_fields_default_and_wrong_types_are_refused() {
        let hs = Handshake::from_json(&serde_json::json!({"address": null})).unwrap();
        assert_eq!(hs.auth(), &serde_json::json!({}));
        assert_eq!(
            (hs.address(), hs.issued(), hs.url()),
            (None, 0, String::new())
        );
        assert!(hs.headers().is_empty() && hs.query().is_empty());
        // Unusable contents of the right type are left out.
        let hs = Handshake::from_json(&serde_json::json!({
            "address": "not an ip", "headers": {"bad name": "v", "x-ok": "1", "x-bad": "a\nb"}
        }))
        .unwrap();
        assert_eq!(hs.address(), None);
        assert_eq!(hs.headers().len(), 1);
        for bad in [
            serde_json::json!("handshake"),
            serde_json::json!({"headers": []}),
            serde_json::json!({"headers": {"a": 1}}),
            serde_json::json!({"headers": {"a": ["x", 2]}}),
            serde_json::json!({"url": 1}),
            serde_json::json!({"address": 127}),
            serde_json::json!({"secure": "yes"}),
            serde_json::json!({"issued": "now"}),
            serde_json::json!({"issued": -1}),
        ] {
            assert_eq!(Handshake::from_json(&bad), None, "{bad}");
        }
        // Far-future times read without overflow.
        let far = Handshake::from_json(&serde_json::json!({"issued": 1e300})).unwrap();
        assert_eq!(far.issued(), u64::MAX);
        assert!(!far.time().is_empty());
    }

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }
}
