//! Limits that hold against hostile clients: the origin check against cross-site
//! WebSocket hijacking, and the per-client send queue bound.

mod common;

use common::*;

const WS_HEADERS: [(&str, &str); 4] = [
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ("Sec-WebSocket-Version", "13"),
];

fn with_origin<'a>(origin: &'a str, extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![("Origin", origin)];
    headers.extend_from_slice(extra);
    headers
}

/// The status line only: a 101 is followed by WebSocket frames, not an HTTP body.
async fn status_line(srv: &Server, target: &str, headers: &[(&str, &str)]) -> String {
    use tokio::io::{AsyncWriteExt, BufReader};
    let mut stream = srv.connect().await;
    let head = request_head(srv.addr, "GET", target, headers, None);
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    within("status line", read_line(&mut reader))
        .await
        .unwrap()
        .trim_end()
        .to_string()
}

/// `X-Forwarded-Host` counts only from a trusted proxy (`--trust-proxy`): any
/// client can send the header, so without that flag a page on
/// `https://evil.example` would pass the same-origin check by naming its own host.
#[tokio::test]
async fn forged_x_forwarded_host_counts_only_with_trust_proxy() {
    let flags = ["--allowed-origins", "https://app.example"];
    let Some(direct) = Server::with_flags(
        "forged_x_forwarded_host_counts_only_with_trust_proxy",
        &flags,
    )
    .await
    else {
        return;
    };
    let Some(proxied) = Server::with_flags(
        "forged_x_forwarded_host_counts_only_with_trust_proxy",
        &[flags[0], flags[1], "--trust-proxy"],
    )
    .await
    else {
        return;
    };
    let polling = eio_path("transport=polling");
    let websocket = eio_path("transport=websocket");
    let evil = "https://evil.example";
    let forged = with_origin(evil, &[("X-Forwarded-Host", "evil.example")]);
    let mut forged_ws = forged.clone();
    forged_ws.extend_from_slice(&WS_HEADERS);

    // Without --trust-proxy: refused on polling and on the WebSocket handshake.
    let res = direct.request("GET", &polling, &forged, None).await;
    assert_eio_error(&res, 403, 4, "Forbidden");
    let res = direct.request("GET", &websocket, &forged_ws, None).await;
    assert_eio_error(&res, 403, 4, "Forbidden");

    // Behind a trusted proxy that rewrites `Host`, its `X-Forwarded-Host` names the
    // page's host: the same request is same-origin.
    let res = proxied.request("GET", &polling, &forged, None).await;
    assert_eq!(res.status, 200, "{}", res.text());
    parse_open(&res.text());
    assert_eq!(
        status_line(&proxied, &websocket, &forged_ws).await,
        "HTTP/1.1 101 Switching Protocols"
    );
    // Only the entry the proxy wrote (the last) counts, and it must match.
    let appended = with_origin(evil, &[("X-Forwarded-Host", "evil.example, app.internal")]);
    let res = proxied.request("GET", &polling, &appended, None).await;
    assert_eio_error(&res, 403, 4, "Forbidden");
    let elsewhere = with_origin(evil, &[("X-Forwarded-Host", "other.example")]);
    let res = proxied.request("GET", &polling, &elsewhere, None).await;
    assert_eio_error(&res, 403, 4, "Forbidden");
    let res = proxied
        .request("GET", &polling, &with_origin(evil, &[]), None)
        .await;
    assert_eio_error(&res, 403, 4, "Forbidden");
}

#[tokio::test]
async fn a_foreign_origin_is_refused_on_polling_and_websocket() {
    let Some(srv) = Server::with_flags(
        "a_foreign_origin_is_refused_on_polling_and_websocket",
        &["--allowed-origins", "https://app.example"],
    )
    .await
    else {
        return;
    };
    let polling = eio_path("transport=polling");
    let websocket = eio_path("transport=websocket");
    let evil = "https://evil.example";

    let res = srv
        .request("GET", &polling, &with_origin(evil, &[]), None)
        .await;
    assert_eio_error(&res, 403, 4, "Forbidden");
    // CSWSH: a WebSocket handshake is not subject to CORS, so the check is here.
    let res = srv
        .request("GET", &websocket, &with_origin(evil, &WS_HEADERS), None)
        .await;
    assert_eio_error(&res, 403, 4, "Forbidden");
    let res = srv
        .request("GET", &polling, &with_origin("null", &[]), None)
        .await;
    assert_eq!(res.status, 403, "{}", res.text());

    // Allowed: the listed origin, the page's own origin, and non-browser clients.
    let own = srv.http_url();
    for origin in ["https://app.example", own.as_str()] {
        let res = srv
            .request("GET", &polling, &with_origin(origin, &[]), None)
            .await;
        assert_eq!(res.status, 200, "{origin}: {}", res.text());
        parse_open(&res.text());
        assert_eq!(
            status_line(&srv, &websocket, &with_origin(origin, &WS_HEADERS)).await,
            "HTTP/1.1 101 Switching Protocols",
            "{origin}"
        );
    }
    let (sid, _) = srv.handshake().await;

    // Requests for an existing session are checked too: its upgrade and its polls.
    let upgrade = eio_path(&format!("transport=websocket&sid={sid}"));
    let res = srv
        .request("GET", &upgrade, &with_origin(evil, &WS_HEADERS), None)
        .await;
    assert_eio_error(&res, 403, 4, "Forbidden");
    let res = srv
        .request("GET", &polling_path(&sid), &with_origin(evil, &[]), None)
        .await;
    assert_eio_error(&res, 403, 4, "Forbidden");
    // The refused requests did not harm the session.
    srv.push_ok(&sid, "4still here").await;
    assert_eq!(srv.poll_data(&sid).await, "4still here");
}

#[tokio::test]
async fn any_origin_passes_by_default_as_in_node() {
    let srv = Server::start().await;
    let res = srv
        .request(
            "GET",
            &eio_path("transport=polling"),
            &[("Origin", "https://elsewhere.example")],
            None,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text());
}

/// `n` messages of `len` bytes each in one polling payload.
fn payload(n: usize, len: usize) -> String {
    let msg = format!("4{}", "x".repeat(len - 1));
    vec![msg; n].join("\x1e")
}

#[tokio::test]
async fn a_client_that_stops_polling_is_disconnected_once_its_queue_is_full() {
    let Some(srv) = Server::with_flags(
        "a_client_that_stops_polling_is_disconnected_once_its_queue_is_full",
        &[
            "--max-send-queue-bytes",
            "50000",
            "--ping-interval",
            "10000",
        ],
    )
    .await
    else {
        return;
    };
    // Under the bound: 40 kB of echoes wait for the next GET.
    let (sid, _) = srv.handshake().await;
    srv.push_ok(&sid, &payload(4, 10_000)).await;
    let echoed = srv.poll(&sid).await;
    assert_eq!(echoed.status, 200);
    assert_eq!(echoed.text(), payload(4, 10_000));

    // Over it: 100 kB of echoes for a client that does not poll.
    let (slow, _) = srv.handshake().await;
    let res = srv.push(&slow, &payload(10, 10_000)).await;
    assert!(res.status < 500, "{} {}", res.status, res.text());
    let res = srv.poll(&slow).await;
    assert_eio_error(&res, 400, 1, "Session ID unknown");

    // The other session is untouched.
    srv.push_ok(&sid, "4after").await;
    assert_eq!(srv.poll_data(&sid).await, "4after");
}

/// The defaults SECURITY.md names, so that a changed default changes the document.
#[test]
fn security_defaults_are_the_documented_ones() {
    use rsio::engine::{AllowedOrigins, EngineConfig};
    use std::time::Duration;

    let engine = EngineConfig::default();
    assert_eq!(engine.max_http_buffer_size, 1_000_000);
    assert_eq!(engine.max_send_queue_bytes, 16 << 20);
    assert_eq!(
        engine.allowed_origins,
        AllowedOrigins::Any,
        "Node's default"
    );
    assert_eq!(engine.cors, None, "no CORS headers unless configured");
    assert!(
        !engine.trust_proxy,
        "X-Forwarded-* ignored unless configured"
    );
    let server = rsio::server::ServerConfig::default();
    assert_eq!(server.connect_timeout, Duration::from_secs(45));
    assert_eq!(server.max_attachments, 10);
    assert_eq!(rsio::parser::MAX_DEPTH, 127);
    let serve = rsio::http::ServeConfig::default();
    assert_eq!(serve.header_read_timeout, Duration::from_secs(10));
    assert_eq!(serve.max_header_bytes, 64 * 1024);
    assert_eq!(serve.max_connections, 100_000);
    let cluster = rsio::cluster::ClusterArgs::default().resolve().unwrap();
    assert_eq!(cluster.max_connections, 100_000);
    assert_eq!(
        cluster.allowed_origins,
        AllowedOrigins::SameOriginAnd(Vec::new()),
        "the cluster runtime is same-origin only by default"
    );
    assert!(!cluster.trust_proxy);
}
