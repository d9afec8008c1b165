//! What a trusted reverse proxy says about the client: `X-Forwarded-Host`,
//! `X-Forwarded-For` and `X-Forwarded-Proto`.
//!
//! Read only when [`EngineConfig::trust_proxy`](super::EngineConfig::trust_proxy)
//! says the peer is a proxy: any client can send these headers, so without a
//! proxy in front they would let a page claim another host, address or scheme.
//! One proxy is trusted, so of each header only the entry it wrote counts: the
//! last one (entries before it came from further away, the client included).

use std::net::{IpAddr, SocketAddr};

use http::HeaderMap;

/// The last comma-separated entry of the last `name` header, trimmed.
pub(crate) fn last_entry<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(name)
        .iter()
        .next_back()
        .and_then(|v| v.as_bytes().rsplit(|&b| b == b',').next())
        .map(<[u8]>::trim_ascii)
        .filter(|v| !v.is_empty())
}

/// The host the page was loaded from, as the proxy saw it.
pub(crate) fn forwarded_host(headers: &HeaderMap) -> Option<&[u8]> {
    last_entry(headers, "x-forwarded-host")
}

/// The client's address as the proxy saw it (port 0 when it names none);
/// `None` when the header is absent or not an address.
pub(crate) fn forwarded_for(headers: &HeaderMap) -> Option<SocketAddr> {
    let entry = std::str::from_utf8(last_entry(headers, "x-forwarded-for")?).ok()?;
    entry.parse::<SocketAddr>().ok().or_else(|| {
        let ip = entry.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 0))
    })
}

/// Whether the client reached the proxy over TLS.
pub(crate) fn forwarded_https(headers: &HeaderMap) -> bool {
    last_entry(headers, "x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case(b"https"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn only_the_entry_the_proxy_wrote_counts() {
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6, 10.0.0.1"),
            ("x-forwarded-for", "203.0.113.7 "),
            ("x-forwarded-host", "evil.example, chat.example"),
            ("x-forwarded-proto", "http, HTTPS"),
        ]);
        assert_eq!(forwarded_for(&h), Some("203.0.113.7:0".parse().unwrap()));
        assert_eq!(forwarded_host(&h), Some(&b"chat.example"[..]));
        assert!(forwarded_https(&h));
    }

    #[test]
    fn addresses_with_ports_and_ipv6_parse() {
        let addr = |v: &'static str| forwarded_for(&headers(&[("x-forwarded-for", v)]));
        assert_eq!(
            addr("[2001:db8::1]:4711"),
            "[2001:db8::1]:4711".parse().ok()
        );
        assert_eq!(addr("2001:db8::1"), "[2001:db8::1]:0".parse().ok());
        assert_eq!(addr("[2001:db8::1]"), "[2001:db8::1]:0".parse().ok());
        assert_eq!(addr("198.51.100.2:80"), "198.51.100.2:80".parse().ok());
        assert_eq!(addr("unknown"), None);
        assert_eq!(addr("1.2.3.4, "), None, "an empty last entry names nobody");
        assert_eq!(forwarded_for(&HeaderMap::new()), None);
        assert!(!forwarded_https(&headers(&[("x-forwarded-proto", "http")])));
        assert!(!forwarded_https(&HeaderMap::new()));
    }
}
