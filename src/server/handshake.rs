//! `socket.handshake`: what the client's first request and CONNECT packet said.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use http::HeaderMap;
use serde::Serialize;

use crate::engine::HandshakeRequest;

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

    #[test]
    fn decodes_query_values() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%e2%82%ac"), "€");
    }
}
