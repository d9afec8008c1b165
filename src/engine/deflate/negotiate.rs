//! The `Sec-WebSocket-Extensions` offer and answer.

use http::{header, HeaderMap, HeaderValue};

/// The answer: the server never keeps its compression context between messages
/// (a broadcast is compressed once for every recipient), and asks the client not
/// to either (its inflater then lives for one message only).
const ANSWER: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// The answer to an offer that named `server_max_window_bits=15` (RFC 7692
/// 7.1.2.1: it must then be repeated).
const ANSWER_15: &str = "permessage-deflate; server_no_context_takeover; \
                         client_no_context_takeover; server_max_window_bits=15";

/// The `Sec-WebSocket-Extensions` answer to the request's offers, or `None` when
/// no offer of permessage-deflate can be accepted.
pub(crate) fn negotiate(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(accept_offer)
        .map(HeaderValue::from_static)
}

/// The answer to one offer, if acceptable. Offers asking for a compression
/// window under 15 bits are declined: every recipient shares one compressed
/// frame, made with the default window.
fn accept_offer(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen = [false; 4];
    let mut answer = ANSWER;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let (i, ok) = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" => (0, value.is_none()),
            "client_no_context_takeover" => (1, value.is_none()),
            "server_max_window_bits" => {
                answer = ANSWER_15;
                (2, value == Some("15"))
            }
            // Any window the client uses fits the inflater's 15 bits.
            "client_max_window_bits" => (3, value.is_none_or(window_bits)),
            _ => return None,
        };
        if !ok || std::mem::replace(&mut seen[i], true) {
            return None;
        }
    }
    Some(answer)
}

fn window_bits(v: &str) -> bool {
    v.len() <= 2 && v.parse::<u8>().is_ok_and(|b| (8..=15).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(offers: &[&str]) -> Option<String> {
        let mut h = HeaderMap::new();
        for o in offers {
            h.append(header::SEC_WEBSOCKET_EXTENSIONS, o.parse().unwrap());
        }
        negotiate(&h).map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn browser_and_node_offers_are_accepted_without_context_takeover() {
        for offer in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate",
            "PerMessage-Deflate; client_max_window_bits=10; server_no_context_takeover",
        ] {
            assert_eq!(answer(&[offer]).as_deref(), Some(ANSWER), "{offer}");
        }
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=15"]).as_deref(),
            Some(ANSWER_15)
        );
    }

    #[test]
    fn unacceptable_offers_are_declined_and_the_next_one_taken() {
        for offer in [
            "permessage-deflate; server_max_window_bits=10",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; unknown",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; client_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(answer(&[offer]), None, "{offer}");
        }
        assert_eq!(
            answer(&["permessage-deflate; server_max_window_bits=9, permessage-deflate"])
                .as_deref(),
            Some(ANSWER)
        );
        assert_eq!(answer(&[]), None);
    }
}
